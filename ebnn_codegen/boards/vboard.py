"""The virtual board: an AVR in libsimavr with a real bootloader, UART0 on a pty.

``firmware/vboard/vboard.c`` is compiled with the host compiler on first use (cached
like the simavr runner of the AVR target). The bootloader is optiboot, built from the
``optiboot.c`` and ``Makefile`` flags that Debian's arduino-core-avr ships, linked for a
1 KB boot section at 0x7C00: the 532 bytes that Debian's avr-gcc makes do not fit the
512 B section the prebuilt hex is linked for (docs/boards.md). avrdude ``-c arduino``
does not care where the bootloader sits; the application gets 31,744 B.

:class:`VirtualBoard` starts one (a subprocess), reads the pty's path from its first
line of output, and stops it. ``ebnn-gen board simulate`` runs it in the foreground.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import CodegenError, ToolError
from ..resources import resource_dir
from ..targets.simavr import libsimavr_flags
from ..targets.toolchain import cache_dir, digest, host_tool, require_tool
from . import Board

OPTIBOOT_DIRS = (
    "/usr/share/arduino/hardware/arduino/avr/bootloaders/optiboot",
    "/usr/share/arduino/hardware/arduino/bootloaders/optiboot",
)
# The flags of the Makefile's atmega328 target (optiboot 4.4), for a 1 KB boot section.
OPTIBOOT_FLAGS = [
    "-g",
    "-Wall",
    "-Os",
    "-fno-inline-small-functions",
    "-fno-split-wide-types",
    "-mshort-calls",
    "-DLED_START_FLASHES=3",
    "-Wl,--relax",
    "-Wl,--gc-sections",
    "-nostartfiles",
    "-nostdlib",
]
VBOARD_SOURCE = "vboard/vboard.c"


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{(proc.stderr + proc.stdout)[-3000:]}"
        )


def optiboot_source() -> Path:
    for d in OPTIBOOT_DIRS:
        if (Path(d) / "optiboot.c").is_file():
            return Path(d)
    raise ToolError("optiboot.c not found", hint="install the Debian package arduino-core-avr")


def bootloader(board: Board) -> tuple[Path, int]:
    """The bootloader image of ``board``'s virtual twin (raw bytes) and its address."""
    sim = board.simulator
    if not sim:
        raise CodegenError(f"board '{board.name}' has no virtual twin (only boards with a 'simulator' entry)")
    if sim.get("bootloader") != "optiboot":
        raise CodegenError(f"board '{board.name}': unknown bootloader {sim.get('bootloader')!r}")
    addr = int(sim["boot_addr"])
    src = optiboot_source()
    cc = require_tool("avr-gcc", "gcc-avr avr-libc")
    objcopy = require_tool("avr-objcopy", "binutils-avr")
    flags = [
        *OPTIBOOT_FLAGS,
        f"-mmcu={board.mcu}",
        f"-DF_CPU={board.f_cpu}L",
        f"-DBAUD_RATE={board.upload_baud}",
        f"-Wl,--section-start=.text=0x{addr:x}",
        f"-Wl,--section-start=.version=0x{board.flash_bytes - 2:x}",
    ]
    text = (src / "optiboot.c").read_text(errors="replace")
    d = cache_dir("vboard") / ("optiboot-" + digest(text, flags))
    out = d / "optiboot.bin"
    if not out.exists():
        d.mkdir(parents=True, exist_ok=True)
        elf = d / f".optiboot.{os.getpid()}.elf"
        _run([cc, *flags, f"-I{src}", str(src / "optiboot.c"), "-o", str(elf)], "building optiboot")
        tmp = d / f".optiboot.{os.getpid()}.bin"
        _run([objcopy, "-O", "binary", "-j", ".text", str(elf), str(tmp)], "avr-objcopy (optiboot)")
        size = tmp.stat().st_size
        if addr + size > board.flash_bytes:
            raise ToolError(f"optiboot is {size} B: it does not fit the boot section at 0x{addr:x}")
        os.replace(elf, d / "optiboot.elf")
        os.replace(tmp, out)
    return out, addr


def runner() -> Path:
    """The vboard program (compiled once into the cache)."""
    cflags, libs = libsimavr_flags()
    source = resource_dir("firmware") / VBOARD_SOURCE
    return host_tool(source, "vboard", cflags, [*libs, "-lutil"], "the virtual board")


def command(board: Board, flash_image: str | os.PathLike[str] | None = None) -> list[str]:
    """The vboard command line for ``board`` (building what it needs)."""
    boot, addr = bootloader(board)
    cmd = [str(runner()), board.mcu, str(board.f_cpu), str(boot), hex(addr)]
    if flash_image is not None:
        cmd.append(str(flash_image))
    return cmd


class VirtualBoard:
    """A running virtual board (a subprocess); ``port`` is its pty. Use as a context
    manager, or call ``stop()``."""

    def __init__(self, board: Board, flash_image: str | os.PathLike[str] | None = None, start_timeout_s: float = 30.0):
        self.board = board
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command(board, flash_image), stdout=subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], start_timeout_s)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("/dev/"):
            self.stop()
            raise ToolError(f"the virtual {board.name} did not start: {self.log()[-2000:]}")
        self.port = line

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> VirtualBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def qemu_command(board: Board, elf: Path) -> list[str]:
    """qemu running the agent firmware ``elf`` with UART0 on a new pty (qemu prints its path)."""
    sim = board.simulator or {}
    qemu = require_tool(sim["qemu"], "qemu-system-arm")
    return [
        qemu, "-M", sim["machine"], "-display", "none", "-monitor", "none", "-serial", "pty",
        "-semihosting-config", "enable=on,target=native", "-kernel", str(elf),
    ]  # fmt: skip


def simulate_qemu(board: Board, elf: Path) -> int:
    """Run a qemu board with the agent in the foreground: the pty's path on stdout (from
    qemu's "char device redirected to ..." line), then until Ctrl-C / SIGTERM."""
    proc = subprocess.Popen(
        qemu_command(board, elf), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
    )
    assert proc.stdout is not None

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # SIGTERM stops qemu too (finally below), exit 0
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            m = re.search(r"char device redirected to (\S+)", line)
            if m:
                print(m.group(1), flush=True)
                break
            sys.stderr.write(line)
        else:
            raise ToolError(f"{board.name}: qemu exited before opening its pty (exit {proc.wait()})")
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(5)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG), so no
    emulator outlives a killed `board simulate`."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def simulate(board: Board, flash_image: str | None = None) -> None:
    """Become the virtual board (``ebnn-gen board simulate``): the pty's path on stdout,
    then it runs until Ctrl-C / SIGTERM (exit 0). Does not return."""
    cmd = command(board, flash_image)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
