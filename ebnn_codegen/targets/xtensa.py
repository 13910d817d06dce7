"""Xtensa lx106 (ESP8266 class): xtensa-lx106-elf-gcc + picolibc, run in qemu's lx106 core.

=============  =========================  ===============================  ==============================
target         chip (budget of check_fits)  build                            run
=============  =========================  ===============================  ==============================
xtensa-lx106   ESP8266 (80 MHz)           xtensa-lx106-elf-gcc -O2          qemu-system-xtensa -M sim
                                          -mtext-section-literals           -cpu lx106, semihosting
                                          + picolibc (hosted crt0)
=============  =========================  ===============================  ==============================

The target is a :class:`~ebnn_codegen.targets.mcu.QemuTarget`: the same harness
(``firmware/qemu/harness.c``), the same records, the same instruction-count plugin
(``firmware/qemu/icount_plugin.c``, which loads into qemu-system-xtensa unchanged) and the same
``run`` / ``size`` / ``bench`` / ``check_fits``.  What is specific to the core lives in
``firmware/xtensa/``:

* ``startup.c``: the reset vector at 0x50000000 (where qemu's sim machine starts the core: it sets
  the stack pointer a1, VECBASE and PS, then jumps to picolibc's crt0), exception vectors that end
  the program with exit code 128 + EXCCAUSE, and picolibc's POSIX I/O (open/read/write/close/lseek,
  stdin/stdout/stderr) on qemu's Xtensa semihosting (``simcall``).
* ``libgcc_extra.c``: the division and 64-bit multiplication helpers missing from Debian's libgcc
  for this compiler (printf needs them; the model code does not divide).
* ``lx106-sim.ld``: code at 0x40100000 (the ESP8266's IRAM address), read-only data at 0x40200000
  (where the ESP8266 maps its flash), data and stack in qemu's 256 KB data RAM at 0x3FFC0000.

Limits: qemu executes the lx106 instruction set but is not an ESP8266 board (no flash cache, no
SDK, no Wi-Fi interrupts); it counts instructions, not cycles, and does not enforce the ESP8266's
32-bit-only access to IRAM and flash-mapped memory.  :func:`esp8266_image` turns an ELF linked
for the real chip (``firmware/xtensa/esp8266.ld``) into the flash image esptool writes; that image
has not been run on hardware.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ToolError
from . import register
from .mcu import Chip, QemuTarget

PREFIX = "xtensa-lx106-elf-"
PACKAGES = "gcc-xtensa-lx106 picolibc-xtensa-lx106-elf qemu-system-misc"
SPECS_CANDIDATES = (
    "/usr/lib/xtensa-lx106-elf/picolibc.specs",  # Debian's picolibc-xtensa-lx106-elf
    "/usr/lib/picolibc/xtensa-lx106-elf/picolibc.specs",
)

ESP8266 = Chip(
    "ESP8266",
    1024 * 1024,
    80 * 1024,
    80_000_000,
    320 * 1024,
    32 * 1024,
    "budget: the 1 MB of flash the ESP8266 maps at 0x40200000 (irom0: code and constants, read "
    "through the 32 KB instruction cache) minus 320 KB for the SDK / Arduino core and the "
    "application; the 80 KB of user data RAM minus 32 KB for the SDK, Wi-Fi buffers and stack",
)


def picolibc_specs() -> str:
    """The picolibc specs file of the lx106 compiler (Debian installs it outside gcc's search path)."""
    for cand in SPECS_CANDIDATES:
        if Path(cand).is_file():
            return cand
    return SPECS_CANDIDATES[0]


class XtensaTarget(QemuTarget):
    """The lx106 core of ``qemu-system-xtensa -M sim`` with the firmware of ``firmware/xtensa/``."""

    prefix = PREFIX
    packages = PACKAGES
    tools = (PREFIX + "gcc", PREFIX + "nm", PREFIX + "size", "qemu-system-xtensa", "cc")
    qemu = "qemu-system-xtensa"
    machine = "sim"
    qemu_extra = ["-cpu", "lx106"]
    firmware_sources = ("xtensa/startup.c", "xtensa/libgcc_extra.c")
    linker_script = "xtensa/lx106-sim.ld"
    link_inputs = ("xtensa/lx106-sim.ld",)

    def require(self) -> None:
        super().require()
        if not Path(picolibc_specs()).is_file():
            raise ToolError(
                f"picolibc for {PREFIX[:-1]} not found ({' or '.join(SPECS_CANDIDATES)})",
                hint="install the Debian package picolibc-xtensa-lx106-elf",
            )

    def tools_available(self) -> bool:
        return super().tools_available() and Path(picolibc_specs()).is_file()

    def link_flags(self, fw: Path) -> list[str]:
        script = fw / self.linker_script
        return ["--crt0=hosted", f"-T{script}"]

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
    "xtensa-lx106",
    "Xtensa lx106 (ESP8266), xtensa-lx106-elf-gcc -O2 + picolibc, instructions in qemu-system-xtensa -M sim",
    ESP8266,
    ["-O2", "-mtext-section-literals", f"--specs={picolibc_specs()}"],
)

register(XTENSA_LX106.name, XTENSA_LX106)
