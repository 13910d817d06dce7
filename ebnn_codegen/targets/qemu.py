"""The qemu driver: runs a firmware in ``qemu-system-*`` with semihosting; instructions from a TCG plugin.

Inputs and records go through host files in a temporary working folder (``ebnn_in.bin``,
``ebnn_out.bin``, semihosting ``open``/``read``/``write``); the text channel is qemu's
stdout and stderr.  With ``regions=True`` the instruction-count plugin
(``firmware/qemu/icount_plugin.c``, compiled on first use) counts the instructions executed
between the firmware's ``h_bench_start`` and ``h_bench_stop`` marks and logs
``EBNN-REGION n count`` lines.

A new qemu machine is a :class:`QemuMachine` value (binary, ``-M`` machine, extra arguments);
a target that needs a different command line overrides :meth:`QemuMachine.command`.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..resources import resource_dir
from .base import Emulation, timeout_error
from .toolchain import host_tool, require_tool

REGION = re.compile(r"^EBNN-REGION (\d+) (\d+)$", re.M)
STACK = re.compile(r"^EBNN-STACK (-?\d+)$", re.M)
WINDOW = re.compile(r"^EBNN-STACK-WINDOW (\d+)$", re.M)
PLUGIN_SOURCE = "qemu/icount_plugin.c"


def plugin() -> Path:
    """The instruction-count plugin (a shared library for qemu's TCG), built once."""
    return host_tool(
        resource_dir("firmware") / PLUGIN_SOURCE,
        "libicount.so",
        ["-shared", "-fPIC", "-O2", "-fvisibility=hidden"],
        [],
        "qemu plugin",
    )


@dataclass(frozen=True)
class QemuMachine:
    """``binary -M machine extra...``: one emulated board."""

    binary: str  # e.g. "qemu-system-arm"
    machine: str  # e.g. "mps2-an385"
    extra: tuple[str, ...] = ()  # e.g. ("-bios", "none")

    def command(self, qemu: str, elf: Path) -> list[str]:
        return [
            qemu,
            "-M",
            self.machine,
            *self.extra,
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
        ]

    def emulate(
        self,
        elf: Path,
        packages: str,
        label: str,
        inputs: bytes | None,
        timeout_s: float,
        bench_range: tuple[int, int] | None,
    ) -> Emulation:
        """Run ``elf``; ``bench_range`` (start, stop addresses) turns on the instruction counter."""
        qemu = require_tool(self.binary, packages)
        with tempfile.TemporaryDirectory(prefix="ebnn-qemu-") as work:
            wd = Path(work)
            cmd = self.command(qemu, elf)
            if bench_range is not None:
                start, stop = bench_range
                cmd += ["-plugin", f"{plugin()},start=0x{start:x},stop=0x{stop:x}", "-d", "plugin"]
                cmd += ["-D", str(wd / "plugin.log")]
            cmd += ["-kernel", str(elf)]
            if inputs is not None:
                (wd / "ebnn_in.bin").write_bytes(inputs)
            try:
                proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, cwd=wd)
            except subprocess.TimeoutExpired:
                raise timeout_error(label, Path(qemu).name, timeout_s) from None
            out_file, log_file = wd / "ebnn_out.bin", wd / "plugin.log"
            records = out_file.read_bytes() if out_file.exists() else b""
            log = log_file.read_text(errors="replace") if bench_range is not None and log_file.exists() else ""
        text = proc.stdout.decode("latin-1") + proc.stderr.decode("latin-1") + log
        found = [(int(m[0]), int(m[1])) for m in REGION.findall(log)]
        return Emulation(proc.returncode, records, text, [(c, None) for _, c in found])


def stack_used(text: str) -> int | None:
    """The stack of one inference the SIZE harness printed (``EBNN-STACK n``; -1: overflowed the window)."""
    m = STACK.search(text)
    return None if m is None else int(m.group(1))


def stack_window(text: str) -> int | None:
    """The bytes the SIZE harness had painted when the stack overflowed them (``EBNN-STACK-WINDOW n``)."""
    m = WINDOW.search(text)
    return None if m is None else int(m.group(1))
