"""The simavr driver: runs an AVR firmware in libsimavr, cycle-exact.

The runner (``firmware/avr/simavr_runner.c``) is compiled against libsimavr with the host
compiler on first use (cached).  It loads the ELF for an MCU and a clock, copies UART0 to
its stdout (the binary records) and the firmware's text to stderr, and counts cycles
between the region marks the harness writes to GPIOR registers (``EBNN-REGION count stack``
lines).  Exit codes of the runner: 100 the AVR crashed, 101 the cycle limit was reached,
65 the ELF could not be loaded.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolError
from ..resources import resource_dir
from .base import Emulation, timeout_error
from .toolchain import host_tool, require_tool

REGION = re.compile(r"^EBNN-REGION (\d+) (\d+)(?: (\d+))?$", re.M)
DEFAULT_MAX_CYCLES = 10**13


def libsimavr_flags() -> tuple[list[str], list[str]]:
    """(compile flags, link flags) of a host program on libsimavr, from pkg-config."""
    require_tool("pkg-config", "pkg-config")
    probe = subprocess.run(["pkg-config", "--cflags", "--libs", "simavr"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise ToolError(
            "libsimavr not found by pkg-config", hint="install the Debian packages libsimavr-dev libelf-dev"
        )
    flags = probe.stdout.split()
    cflags = ["-O2", *[f for f in flags if f.startswith("-I")]]
    return cflags, [f for f in flags if not f.startswith("-I")] + ["-lelf"]


@dataclass(frozen=True)
class Simavr:
    """libsimavr through the runner; ``runner_source`` is relative to firmware/."""

    runner_source: str = "avr/simavr_runner.c"

    def available(self) -> bool:
        try:
            return subprocess.run(["pkg-config", "--exists", "simavr"]).returncode == 0
        except OSError:
            return False

    def runner(self) -> Path:
        cflags, libs = libsimavr_flags()
        return host_tool(resource_dir("firmware") / self.runner_source, "simavr_runner", cflags, libs, "simavr runner")

    def emulate(
        self, elf: Path, mcu: str, clock_hz: int, timeout_s: float, max_cycles: int | None, label: str
    ) -> Emulation:
        """Run ``elf`` on ``mcu``; ToolError (named ``label``) on the cycle limit or the wall clock."""
        max_cycles = max_cycles if max_cycles is not None else DEFAULT_MAX_CYCLES
        cmd = [str(self.runner()), str(elf), mcu, str(clock_hz), str(max_cycles)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise timeout_error(label, "simavr", timeout_s) from None
        text = proc.stderr.decode("latin-1")
        if proc.returncode == 101:
            raise ToolError(
                f"{label}: simavr timed out: cycle limit of {max_cycles} cycles reached "
                f"(the firmware hangs?)\n{text.strip()[-2000:]}"
            )
        found = [(int(m[1]), int(m[2] or 0)) for m in REGION.findall(text)]
        return Emulation(proc.returncode, proc.stdout, text, list(found))

    @staticmethod
    def explain(rc: int) -> str:
        return {100: "the AVR crashed (exit 100)", 101: "cycle limit (exit 101)", 65: "cannot load the ELF"}.get(
            rc, f"exit code {rc}"
        )
