"""Target traits: what the generated kernels may assume of the chip that compiles them.

The kernel plans (:mod:`ebnn_codegen.codegen.kernels`) read only these traits, never a chip
name, so a new chip brings its traits and never touches the compiler.  Every target declares
its own (``Target.traits``: the AVR keeps its assembly, the 32-bit chips drop it and pin
``barrel_shifter``); its builds and ``export --target`` render with them, so what a target
verifies is what ships.  A trait left at ``None`` is decided by the C preprocessor on the
compiler's own macros, inside the generated file: :data:`PORTABLE`, the default of ``export``
without a target and of the host, keeps one ``model.c`` valid for every target (the golden files
are rendered with it).  A target's traits only choose among code shapes that compile to the same
object code as the portable C on that chip (tested per target):

* ``asm_dialect``: ``"avr"`` emits, beside the portable C, AVR inline assembly for the binary
  kernels (``ldi/eor/lpm/add``: 6 cycles a byte), selected by ``EBNN_POPCOUNT8_PAGED`` (defined by
  the runtime header under avr-gcc); ``None`` emits portable C only.
* ``max_asm_window``: the largest window (bytes) given to one asm statement.  AVR: each byte,
  the count and a temporary need a register besides r0/r1 (fixed), r30/r31 (Z, clobbered) and
  r28/r29 (Y, the frame pointer when the function needs a frame): 24 bytes + 2 fit the 26 left;
  windows of 25..28 bytes failed to compile ("can't find a register ... while reloading asm").
* ``barrel_shifter``: whether a compare with a shifted immediate is cheap (Cortex-M3/M4, RISC-V:
  the interior bounds become immediates).  ``None`` decides by preprocessor (not on Cortex-M0,
  ``__ARM_ARCH_6M__``); ``True``/``False`` pin the choice.
* ``word_bytes``: 4 emits the 32-bit SWAR paths for non-AVR compilers (the only width today).

Limits: the traits choose among the code shapes the templates know; a new instruction set for
the asm path needs a new dialect here (:func:`asm_filter`), not a template change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TargetTraits:
    asm_dialect: str | None = "avr"
    max_asm_window: int = 24  # see the module docstring: 24 bytes + 2 outputs fit the 26 free registers
    barrel_shifter: bool | None = None
    word_bytes: int = 4

    def __post_init__(self) -> None:
        if self.asm_dialect not in (None, "avr"):
            raise ValueError(f"unknown asm dialect {self.asm_dialect!r}")
        if not 1 <= self.max_asm_window <= 24:
            raise ValueError("max_asm_window must be 1..24 (the registers an AVR asm statement can get)")
        if self.word_bytes != 4:
            raise ValueError("only 32-bit word kernels exist (word_bytes=4)")


PORTABLE = TargetTraits()


def asm_filter(dialect: str, weights: list[int]) -> tuple[str, ...]:
    """The asm lines counting the mismatches of one filter against the window ``a0 .. a(K-1)``.

    AVR: ``Z = (table page, a ^ w)`` then ``lpm``; the count accumulates in ``%[m]``; ``r31``
    holds the popcount table's page (loaded by the statement's first line).
    """
    if dialect != "avr":  # pragma: no cover - TargetTraits refuses other dialects
        raise ValueError(dialect)
    lines: list[str] = []
    for k, v in enumerate(weights):
        if v:
            lines += [f"ldi r30, {v}", f"eor r30, %[a{k}]"]
        else:
            lines.append(f"mov r30, %[a{k}]")
        lines.append("lpm %[t], Z")
        lines.append("mov %[m], %[t]" if k == 0 else "add %[m], %[t]")
    return tuple(lines)
