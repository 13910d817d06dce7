"""ELF size accounting: what the model's own symbols occupy once linked, from ``nm`` and ``size``.

The parsers are pure functions of the tools' text (tested without a toolchain); the
``*_of`` functions run the target's ``nm`` / ``size``.  Flash of the model = its code
(``t``), constants (``r``, and on AVR ``t`` in PROGMEM) and initialised data (``d``, copied
to RAM); static RAM = ``d`` + ``b``.  Functions removed by ``--gc-sections`` or inlined do
not count; a local name defined twice takes the size that matches the object file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .toolchain import CrossCompiler, run_tool

Symbol = tuple[str, str, int]  # name, nm type letter, size


@dataclass
class ModelSizes:
    code_bytes: int = 0
    constant_bytes: int = 0
    data_bytes: int = 0
    bss_bytes: int = 0
    sram_symbols: dict[str, int] = field(default_factory=dict)

    @property
    def flash_bytes(self) -> int:
        return self.code_bytes + self.constant_bytes + self.data_bytes

    @property
    def sram_bytes(self) -> int:
        return self.data_bytes + self.bss_bytes


def parse_nm_sizes(text: str) -> list[Symbol]:
    """``nm -S --defined-only`` output -> defined symbols with a size."""
    syms = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms.append((parts[3], parts[2], int(parts[1], 16)))
    return syms


def parse_nm_addresses(text: str) -> dict[str, int]:
    """``nm --defined-only`` output -> {name: address}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[parts[2]] = int(parts[0], 16)
    return out


def parse_size(text: str) -> dict[str, int]:
    """``size -B`` output -> the whole image's flash (text + data) and static RAM (data + bss)."""
    text_b, data_b, bss_b = (int(v) for v in text.splitlines()[1].split()[:3])
    return {"image_flash_bytes": text_b + data_b, "image_sram_bytes": data_b + bss_b}


def model_sizes(objects: list[list[Symbol]], linked: list[Symbol]) -> ModelSizes:
    """The model's symbols (from its object files) as they are linked into the ELF."""
    wanted: dict[str, tuple[str, int]] = {}
    for syms in objects:
        for name, kind, size in syms:
            if kind.lower() in "tdbr":
                wanted[name] = (kind.lower(), size)
    in_elf: dict[str, list[tuple[str, int]]] = {}
    for name, kind, size in linked:
        in_elf.setdefault(name, []).append((kind.lower(), size))
    sizes = ModelSizes()
    for name, (kind, osize) in wanted.items():
        found = in_elf.get(name)
        if not found:
            continue  # removed as unused, or inlined
        if len(found) > 1:  # a local name that also exists elsewhere: take the same size
            found = [f for f in found if f[1] == osize] or found[:1]
        size = found[0][1]
        if kind == "t":
            sizes.code_bytes += size
        elif kind == "r":
            sizes.constant_bytes += size
        elif kind == "d":
            sizes.data_bytes += size
            sizes.sram_symbols[name] = size
        else:
            sizes.bss_bytes += size
            sizes.sram_symbols[name] = size
    return sizes


def nm_sizes_of(tc: CrossCompiler, path: Path) -> list[Symbol]:
    return parse_nm_sizes(run_tool([tc.tool("nm"), "-S", "--defined-only", str(path)], f"{tc.prefix}nm"))


def addresses_of(tc: CrossCompiler, elf: Path) -> dict[str, int]:
    return parse_nm_addresses(run_tool([tc.tool("nm"), "--defined-only", str(elf)], f"{tc.prefix}nm"))


def image_sizes_of(tc: CrossCompiler, elf: Path) -> dict[str, int]:
    """Whole firmware image (harness and libc included), from the target's ``size``."""
    return parse_size(run_tool([tc.tool("size"), "-B", str(elf)], f"{tc.prefix}size"))


def model_sizes_of(tc: CrossCompiler, elf: Path, model_objs: list[Path]) -> ModelSizes:
    """Flash and static RAM of the model's own symbols (NAME.c and its share of the runtime)."""
    return model_sizes([nm_sizes_of(tc, o) for o in model_objs], nm_sizes_of(tc, elf))
