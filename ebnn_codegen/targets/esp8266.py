"""ESP8266: the model as a bare-metal application (no SDK) and its esptool flash image.

:data:`ESP8266_APP` is the model plus ``firmware/xtensa/esp8266_app.c`` linked for the ESP8266's
own memories (``esp8266.ld``: code in the 32 KB IRAM, constants and data in the 80 KB data RAM),
started by the ROM bootloader at ``_start``; :data:`ESP8266_APP_QEMU` is the same program
printing through qemu's semihosting, to run it in ``qemu-system-xtensa`` (:func:`run_in_qemu`).
:func:`esp8266_image` turns the ELF into the flash image ``esptool write-flash`` writes.

Limits: at most :data:`MAX_SAMPLES` embedded inputs; constants live in data RAM (not read from
flash), so models over about 70 KB are refused; the image has not been run on hardware.
These targets are not registered (they build applications, they do not run records).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import FitError, LinkOverflowError, ResourceError, ToolError
from ..ir import Model
from .base import check_inputs
from .harness import MODE_RUN
from .mcu import LinkRecipe
from .xtensa import XTENSA_LX106, XtensaTarget, compiler

MAX_SAMPLES = 64
ESPTOOL_HINT = "pip install 'esptool>=5' (the extra ebnn-codegen[boards])"
_REGIONS = {"iram": "32 KB of IRAM (code)", "dram": "80 KB of data RAM (constants, data, stack)"}

ESP8266_APP: XtensaTarget = replace(
    XTENSA_LX106,
    name="xtensa-lx106-esp8266",
    description="ESP8266 bare-metal application (no SDK), for esptool",
    link=LinkRecipe(
        flags=("-nostartfiles", "-T{fw}/xtensa/esp8266.ld"),
        sources=("xtensa/libgcc_extra.c",),
        scripts=("xtensa/esp8266.ld",),
    ),
    harness="xtensa/esp8266_app.c",
)
ESP8266_APP_QEMU: XtensaTarget = replace(
    ESP8266_APP,
    name="xtensa-lx106-esp8266-sim",
    description="the ESP8266 application printing through qemu's semihosting",
    toolchain=compiler("-DH_QEMU_SIM"),
)


def build_app(target: XtensaTarget, graph: Model, x: np.ndarray, kernels: str = "fast") -> Path:
    """The application ELF of ``target`` (:data:`ESP8266_APP` or :data:`ESP8266_APP_QEMU`) with
    the inputs ``x`` (N×C×H×W uint8, 1 to 64) embedded; ResourceError when it overflows a memory."""
    x = check_inputs(graph, x)
    if not 1 <= len(x) <= MAX_SAMPLES:
        raise ResourceError(f"the ESP8266 application embeds 1 to {MAX_SAMPLES} inputs, got {len(x)}")
    target.require()
    try:
        return target.build(graph, kernels, MODE_RUN, x)
    except (FitError, ToolError) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, LinkOverflowError) else None
        if cause is None and "data RAM overflowed" not in str(exc):
            raise
        where = _REGIONS.get(cause.region, cause.region) if cause else _REGIONS["dram"]
        extra = f" by {cause.overflow_bytes} B" if cause and cause.overflow_bytes else ""
        raise ResourceError(
            f"model '{graph.name}' ({kernels} kernels) with {len(x)} embedded input(s) overflows the "
            f"ESP8266's {where}{extra} in the bare-metal application (no SDK: constants are not read "
            f"from flash)",
            hint="embed fewer inputs, or use a smaller model (see `ebnn-gen report MODEL`)",
        ) from None


def run_in_qemu(elf: Path, timeout_s: float = 60.0) -> list[tuple[int, list[int]]]:
    """Run an :data:`ESP8266_APP_QEMU` build in qemu, started at its ELF entry as the ROM
    bootloader would; returns (class, scores) per embedded input."""
    qemu = XTENSA_LX106.machine.binary
    cmd = [qemu, "-M", "sim", "-cpu", "lx106", "-nographic", "-monitor", "none", "-serial", "none"]
    cmd += ["-semihosting", "-kernel", str(elf), "-device", f"loader,addr=0x{elf_entry(elf):x},cpu-num=0"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{qemu} timed out after {timeout_s:g} s running {elf}") from None
    found = re.findall(r"^EBNN-ESP8266 (\d+) (-?\d+)((?: -?\d+)*)$", proc.stdout, re.M)
    n = re.search(r"^EBNN-HARNESS OK (\d+)$", proc.stdout, re.M)
    if proc.returncode != 0 or n is None or int(n.group(1)) != len(found):
        raise ToolError(
            f"the ESP8266 application failed in qemu ({XTENSA_LX106.explain(proc.returncode)}): "
            f"{(proc.stdout + proc.stderr).strip()[-2000:]}"
        )
    return [(int(pred), [int(v) for v in scores.split()]) for _, pred, scores in found]


def elf_entry(elf: Path) -> int:
    """The entry address of a 32-bit little-endian ELF."""
    data = elf.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise ToolError(f"{elf}: not a 32-bit little-endian ELF")
    return int.from_bytes(data[24:28], "little")


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
    elf2image`` (``<name>-0x00000.bin``, plus ``<name>-0x10000.bin`` when the ELF has an irom0
    segment; ``name`` defaults to the ELF's stem), written into ``out_dir``.  Raises ToolError
    when esptool is missing or refuses the ELF."""
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
    return esp8266_image(build_app(ESP8266_APP, graph, x, kernels), out_dir, name=graph.name)
