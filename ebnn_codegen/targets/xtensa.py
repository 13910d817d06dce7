"""Xtensa lx106 (ESP8266 class): xtensa-lx106-elf-gcc + picolibc, run in qemu's lx106 core.

=============  ===========================  ==============================  ==========================
target         chip (budget of check_fits)  build                           run
=============  ===========================  ==============================  ==========================
xtensa-lx106   ESP8266 (80 MHz)             xtensa-lx106-elf-gcc -O2        qemu-system-xtensa -M sim
                                            -mtext-section-literals         -cpu lx106, semihosting
                                            + picolibc (hosted crt0)
=============  ===========================  ==============================  ==========================

The target is a :class:`~.qemu_targets.QemuTarget` value (subclassed only because its exit
codes read differently): the chip ``CHIPS["esp8266"]``, the same harness
(``firmware/qemu/harness.c``), the same records, the same instruction-count plugin (which loads
into qemu-system-xtensa unchanged).  What is specific to the core lives in ``firmware/xtensa/``:

* ``startup.c``: the reset vector at 0x50000000 (where qemu's sim machine starts the core: it sets
  the stack pointer a1, VECBASE and PS, then jumps to picolibc's crt0), exception vectors that end
  the program with exit code 128 + EXCCAUSE, and picolibc's POSIX I/O on qemu's Xtensa
  semihosting (``simcall``).
* ``libgcc_extra.c``: the division and 64-bit multiplication helpers missing from Debian's libgcc
  for this compiler (printf needs them; the model code does not divide).
* ``lx106-sim.ld``: code at 0x40100000 (the ESP8266's IRAM address), read-only data at 0x40200000
  (where the ESP8266 maps its flash), data and stack in qemu's 256 KB data RAM at 0x3FFC0000.

Limits: qemu executes the lx106 instruction set but is not an ESP8266 board (no flash cache, no
SDK, no Wi-Fi interrupts); it counts instructions, not cycles, and does not enforce the ESP8266's
32-bit-only access to IRAM and flash-mapped memory.  The ESP8266 application and its esptool
flash image are in :mod:`.esp8266`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..codegen.traits import TargetTraits
from ..errors import ToolError
from .chips import CHIPS
from .mcu import LinkRecipe
from .qemu import QemuMachine
from .qemu_targets import QemuTarget
from .toolchain import CrossCompiler

PREFIX = "xtensa-lx106-elf-"
PACKAGES = "gcc-xtensa-lx106 picolibc-xtensa-lx106-elf qemu-system-misc"
TOOLS = (PREFIX + "gcc", PREFIX + "nm", PREFIX + "size", "qemu-system-xtensa", "cc")
SPECS_CANDIDATES = (
    "/usr/lib/xtensa-lx106-elf/picolibc.specs",  # Debian's picolibc-xtensa-lx106-elf
    "/usr/lib/picolibc/xtensa-lx106-elf/picolibc.specs",
)
MACHINE = QemuMachine("qemu-system-xtensa", "sim", ("-cpu", "lx106"))


def picolibc_specs() -> str:
    """The picolibc specs file of the lx106 compiler (Debian installs it outside gcc's search path)."""
    for cand in SPECS_CANDIDATES:
        if Path(cand).is_file():
            return cand
    return SPECS_CANDIDATES[0]


def compiler(*extra: str) -> CrossCompiler:
    """xtensa-lx106-elf-gcc -O2 with literals beside the code and picolibc (``extra`` appended)."""
    return CrossCompiler(PREFIX, PACKAGES, ("-O2", "-mtext-section-literals", f"--specs={picolibc_specs()}", *extra))


@dataclass
class XtensaTarget(QemuTarget):
    """An lx106 target: picolibc must be installed too; exit codes 126 to 191 are exceptions."""

    def require(self) -> None:
        super().require()
        if not Path(picolibc_specs()).is_file():
            raise ToolError(
                f"picolibc for {PREFIX[:-1]} not found ({' or '.join(SPECS_CANDIDATES)})",
                hint="install the Debian package picolibc-xtensa-lx106-elf",
            )

    def available(self) -> bool:
        return super().available() and Path(picolibc_specs()).is_file()

    def explain(self, rc: int) -> str:
        if 128 <= rc < 128 + 64:
            return f"exit {rc}: Xtensa exception, EXCCAUSE {rc - 128}"
        if rc == 127:
            return "exit 127: double exception"
        if rc == 126:
            return "exit 126: debug exception or NMI"
        return f"exit code {rc}"

    def bench_notes(self) -> dict[str, str]:
        return {
            "ms_at_clock_assumes": "one instruction per cycle at 80 MHz (qemu counts instructions, not cycles; "
            "on an ESP8266 constants read from flash through the cache cost more on a miss)"
        }


XTENSA_LX106 = XtensaTarget(
    name="xtensa-lx106",
    description="Xtensa lx106 (ESP8266), xtensa-lx106-elf-gcc -O2 + picolibc, instructions in qemu-system-xtensa -M sim",
    chip=CHIPS["esp8266"],
    toolchain=compiler(),
    link=LinkRecipe(
        flags=("--crt0=hosted", "-T{fw}/xtensa/lx106-sim.ld"),
        sources=("xtensa/startup.c", "xtensa/libgcc_extra.c"),
        scripts=("xtensa/lx106-sim.ld",),
    ),
    harness="qemu/harness.c",
    tools=TOOLS,
    packages=PACKAGES,
    metric="instructions",
    traits=TargetTraits(asm_dialect=None, barrel_shifter=True),
    machine=MACHINE,
)

TARGETS: list[QemuTarget] = [XTENSA_LX106]
