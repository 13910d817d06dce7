"""The fit check: does a model fit a chip's budget?  One policy for every target and command.

What counts (see docs/targets.md):

* flash: the model's code, its constants (weights, thresholds, exit affine, the popcount
  table) and initialised data, as linked (measured), or its constants alone (predicted
  from the IR when no toolchain is installed);
* RAM: the model's static RAM (the workspace), the input and the scores the application
  passes, and the peak stack of one inference (measured in the emulator).

The budget is the chip's memory minus its reserves (:mod:`.chips`).  A refusal is a
:class:`~ebnn_codegen.errors.FitError` (exit 2) with the numbers, e.g.
``needs 38,478 B flash, ATmega328P has 32,256 B after its bootloader (30,208 B for the
model beside the sketch and Arduino core); largest: block 2 weights 25,088 B``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .. import costs
from ..errors import FitError
from ..errors import StackWindowError as StackWindowError  # re-exported for the targets
from ..ir import Model
from .chips import Chip

HINT = "use fewer channels or smaller layers (see `ebnn-gen report MODEL`), or a bigger target"


@dataclass
class Needs:
    """What a model needs on a chip, with the parts that make it up (for naming the largest)."""

    flash_bytes: int
    sram_bytes: int
    flash_parts: list[tuple[str, int]] = field(default_factory=list)
    sram_parts: list[tuple[str, int]] = field(default_factory=list)
    measured: bool = False
    how: str = ""


@dataclass
class FitReport:
    """The numbers a passed fit check compared (a refused one raises FitError with them)."""

    target: str
    chip: str
    kernels: str
    flash_bytes: int
    sram_needed_bytes: int
    flash_budget_bytes: int
    sram_budget_bytes: int
    measured: bool
    how: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ram_parts(graph: Model, static: int, stack: int | None) -> list[tuple[str, int]]:
    """RAM the application needs for the model: static RAM, the input and scores it passes, the stack."""
    parts = [("static RAM (workspace)", static), ("input", graph.input_bytes), ("scores", 4 * graph.num_classes)]
    if stack is not None:
        parts.append(("peak stack", stack))
    return parts


def predicted(graph: Model) -> Needs:
    """From the IR alone: flash = the model's constants, RAM = workspace + input + scores."""
    totals = costs.report(graph)["totals"]
    ram = ram_parts(graph, int(totals["static_ram_bytes"]), None)
    return Needs(
        flash_bytes=int(totals["flash_bytes"]),
        sram_bytes=sum(n for _, n in ram),
        flash_parts=costs.flash_parts(graph),
        sram_parts=ram,
        measured=False,
        how="predicted from the IR: flash = model constants, RAM = workspace + input + scores; "
        "code and stack come on top",
    )


def measured(graph: Model, code: int, constants: int, data: int, static: int, stack: int | None) -> Needs:
    """From the linked ELF (code, constants, initialised data, static RAM) and the emulator (stack)."""
    flash_parts = [("code", code), *costs.flash_parts(graph)]
    if data:
        flash_parts.append(("initialised data", data))
    ram = ram_parts(graph, static, stack)
    how = f"measured: code {code:,} B + constants {constants + data:,} B"
    how += "; RAM = static + input + scores + peak stack" if stack is not None else " (the ELF cannot run)"
    return Needs(code + constants + data, sum(n for _, n in ram), flash_parts, ram, True, how)


def at_least(needs: Needs, short: StackWindowError) -> Needs:
    """``needs`` (measured without the stack) with the stack's lower bound: it overflowed the
    ``short.window`` bytes of RAM the emulated chip had left, so it needs at least one more."""
    ram = [*(p for p in needs.sram_parts if p[0] != "peak stack"), ("peak stack (at least)", short.window + 1)]
    how = needs.how.replace("+ peak stack", "+ peak stack (more than the emulated chip had left)")
    return Needs(needs.flash_bytes, sum(n for _, n in ram), needs.flash_parts, ram, True, how)


def _largest(parts: list[tuple[str, int]]) -> str:
    if not parts:
        return ""
    label, n = max(parts, key=lambda p: p[1])
    return f"; largest: {label} {n:,} B"


def flash_problem(chip: Chip, needed: int, parts: list[tuple[str, int]]) -> str:
    if chip.bootloader_bytes:
        has = f"{chip.flash_after_bootloader:,} B after its bootloader"
    else:
        has = f"{chip.flash_bytes:,} B"
    return f"needs {needed:,} B flash, {chip.name} has {has} ({chip.flash_budget:,} B for the model){_largest(parts)}"


def ram_problem(chip: Chip, needed: int, parts: list[tuple[str, int]]) -> str:
    bound = "at least " if any(label.endswith("(at least)") for label, _ in parts) else ""
    return (
        f"needs {bound}{needed:,} B RAM, {chip.name} has {chip.sram_bytes:,} B ({chip.sram_budget:,} B for the model)"
        f"{_largest(parts)}"
    )


def judge(target: str, chip: Chip, graph: Model, kernels: str, needs: Needs) -> FitReport:
    """Return the numbers, or raise FitError naming what does not fit and by how much."""
    problems = []
    if needs.flash_bytes > chip.flash_budget:
        problems.append(flash_problem(chip, needs.flash_bytes, needs.flash_parts))
    if needs.sram_bytes > chip.sram_budget:
        problems.append(ram_problem(chip, needs.sram_bytes, needs.sram_parts))
    if problems:
        raise FitError(
            f"model '{graph.name}' ({kernels} kernels) does not fit {target}: {'; and '.join(problems)} "
            f"({needs.how}; {chip.reserve_note})",
            hint=HINT,
        )
    return FitReport(
        target=target,
        chip=chip.name,
        kernels=kernels,
        flash_bytes=needs.flash_bytes,
        sram_needed_bytes=needs.sram_bytes,
        flash_budget_bytes=chip.flash_budget,
        sram_budget_bytes=chip.sram_budget,
        measured=needs.measured,
        how=needs.how,
    )
