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

import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ResourceError, ToolError
from ..ir import Model
from . import register
from .base import check_inputs
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
    firmware_sources: tuple[str, ...] = ("xtensa/startup.c", "xtensa/libgcc_extra.c")
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


# ---------------------------------------------------------------------------------------
# ESP8266: a bare-metal application and its esptool flash image
# ---------------------------------------------------------------------------------------

ESP8266_APP = "xtensa/esp8266_app.c"
ESP8266_LD = "xtensa/esp8266.ld"
ESP8266_MAX_SAMPLES = 64
ESPTOOL_HINT = "pip install 'esptool>=5' (the extra ebnn-codegen[boards])"


class Esp8266App(XtensaTarget):
    """The model plus ``firmware/xtensa/esp8266_app.c`` linked for the ESP8266's own memories
    (``esp8266.ld``: code in the 32 KB IRAM, constants and data in the 80 KB data RAM), started
    by the ROM bootloader at ``_start``; no SDK.  ``semihost=True`` builds the same program
    printing through qemu's semihosting, to run it in ``qemu-system-xtensa`` (``run_in_qemu``)."""

    harness = ESP8266_APP
    firmware_sources = ("xtensa/libgcc_extra.c",)
    linker_script = ESP8266_LD
    link_inputs = (ESP8266_LD,)

    def link_flags(self, fw: Path) -> list[str]:
        return ["-nostartfiles", f"-T{fw / self.linker_script}"]

    def build_app(self, graph: Model, x: np.ndarray, kernels: str = "fast") -> Path:
        """The application ELF with the inputs ``x`` (N×C×H×W uint8, 1 to 64) embedded."""
        x = check_inputs(graph, x)
        if not 1 <= len(x) <= ESP8266_MAX_SAMPLES:
            raise ResourceError(f"the ESP8266 application embeds 1 to {ESP8266_MAX_SAMPLES} inputs, got {len(x)}")
        self.require()
        try:
            return self.build(graph, kernels, 1, x)
        except ToolError as exc:
            text = str(exc)
            m = re.search(r"region `(\w+)' overflowed by (\d+) bytes", text)
            if m is None and "data RAM overflowed" not in text:
                raise
            what = {"iram": "32 KB of IRAM (code)", "dram": "80 KB of data RAM (constants, data, stack)"}
            where = what.get(m.group(1), m.group(1)) if m else what["dram"]
            extra = f" by {m.group(2)} B" if m else ""
            raise ResourceError(
                f"model '{graph.name}' ({kernels} kernels) with {len(x)} embedded input(s) overflows the "
                f"ESP8266's {where}{extra} in the bare-metal application (no SDK: constants are not read "
                f"from flash)",
                hint="embed fewer inputs, or use a smaller model (see `ebnn-gen report MODEL`)",
            ) from None

    def run_in_qemu(self, elf: Path, timeout_s: float = 60.0) -> list[tuple[int, list[int]]]:
        """Run a ``semihost=True`` build in qemu, started at its ELF entry as the ROM bootloader
        would; returns (class, scores) per embedded input."""
        qemu = XTENSA_LX106.qemu
        entry = _elf_entry(elf)
        cmd = [qemu, "-M", "sim", "-cpu", "lx106", "-nographic", "-monitor", "none", "-serial", "none"]
        cmd += ["-semihosting", "-kernel", str(elf), "-device", f"loader,addr=0x{entry:x},cpu-num=0"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ToolError(f"{qemu} timed out after {timeout_s:g} s running {elf}") from None
        found = re.findall(r"^EBNN-ESP8266 (\d+) (-?\d+)((?: -?\d+)*)$", proc.stdout, re.M)
        n = re.search(r"^EBNN-HARNESS OK (\d+)$", proc.stdout, re.M)
        if proc.returncode != 0 or n is None or int(n.group(1)) != len(found):
            raise ToolError(
                f"the ESP8266 application failed in qemu ({self.explain(proc.returncode)}): "
                f"{(proc.stdout + proc.stderr).strip()[-2000:]}"
            )
        return [(int(pred), [int(v) for v in scores.split()]) for _, pred, scores in found]


def _elf_entry(elf: Path) -> int:
    data = elf.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise ToolError(f"{elf}: not a 32-bit little-endian ELF")
    return int.from_bytes(data[24:28], "little")


ESP8266_APP_TARGET = Esp8266App(
    "xtensa-lx106-esp8266",
    "ESP8266 bare-metal application (no SDK), for esptool",
    ESP8266,
    ["-O2", "-mtext-section-literals", f"--specs={picolibc_specs()}"],
)
ESP8266_APP_QEMU = Esp8266App(
    "xtensa-lx106-esp8266-sim",
    "the same application printing through qemu's semihosting",
    ESP8266,
    ["-O2", "-mtext-section-literals", f"--specs={picolibc_specs()}", "-DH_QEMU_SIM"],
)


@dataclass
class FlashImage:
    """An ESP8266 flash image: the files with their flash offsets, and how to write them."""

    files: list[tuple[int, Path]]
    elf: Path

    def write_flash_command(self, port: str, baud: int = 460800, flash_size: str = "detect") -> list[str]:
        """The esptool command line that writes the image (DIO flash mode, ROM bootloader)."""
        cmd = [sys.executable, "-m", "esptool", "--chip", "esp8266", "--port", port, "--baud", str(baud)]
        cmd += ["write-flash", "--flash-mode", "dio", "--flash-size", flash_size]
        for offset, path in self.files:
            cmd += [f"0x{offset:05x}", str(path)]
        return cmd


def esptool_available() -> bool:
    return importlib.util.find_spec("esptool") is not None


def _esptool(args: list[str], what: str) -> str:
    if not esptool_available():
        raise ToolError("esptool is not installed", hint=ESPTOOL_HINT)
    proc = subprocess.run([sys.executable, "-m", "esptool", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(
            f"esptool {what} failed (exit {proc.returncode}): {(proc.stderr + proc.stdout).strip()[-3000:]}"
        )
    return proc.stdout


def esp8266_image(elf: Path, out_dir: Path, flash_size: str = "1MB", name: str | None = None) -> FlashImage:
    """Turn an ELF linked for the ESP8266 into a version-1 flash image with ``esptool
    elf2image`` (``<name>-0x00000.bin``, plus ``<name>-0x10000.bin`` when the ELF has an
    irom0 segment; ``name`` defaults to the ELF's stem), written into ``out_dir``.  Raises ToolError when esptool is missing or
    refuses the ELF."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or elf.stem
    prefix = out_dir / f"{name}-"
    for old in out_dir.glob(f"{name}-0x*.bin"):
        old.unlink()
    _esptool(
        ["--chip", "esp8266", "elf2image", "--version", "1", "--flash-mode", "dio", "--flash-size", flash_size]
        + ["--output", str(prefix), str(elf)],
        "elf2image",
    )
    files = sorted(
        (int(p.name[len(prefix.name) :].removesuffix(".bin"), 16), p) for p in out_dir.glob(f"{name}-0x*.bin")
    )
    if not files:
        raise ToolError(f"esptool elf2image wrote no image for {elf} into {out_dir}")
    return FlashImage(files, elf)


def image_info(path: Path) -> str:
    """``esptool image-info`` of one image file (raises ToolError when esptool rejects it)."""
    return _esptool(["--chip", "esp8266", "image-info", str(path)], "image-info")


def esp8266_flash_image(graph: Model, x: np.ndarray, out_dir: Path, kernels: str = "fast") -> FlashImage:
    """The model as a bare-metal ESP8266 application with the inputs ``x`` embedded, as a flash image."""
    return esp8266_image(ESP8266_APP_TARGET.build_app(graph, x, kernels), out_dir, name=graph.name)
