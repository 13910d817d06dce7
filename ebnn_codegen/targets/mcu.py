"""Microcontroller targets: the generated C cross-compiled and run on emulators.

=============  ===========================  ==============================  =====================
target         chip (budget of check_fits)  build                           run
=============  ===========================  ==============================  =====================
avr            ATmega328P (Arduino Uno)     avr-gcc -Os + avr-libc          libsimavr (cycles)
cortex-m0      nRF51822 (micro:bit)         arm-none-eabi-gcc -O2 + newlib  qemu -M microbit
cortex-m3      STM32F103C8 class            same                            qemu -M mps2-an385
cortex-m4      STM32F411CE class (M4F)      same, hard float                qemu -M mps2-an386
rv32imc        ESP32-C3 class               riscv64-unknown-elf-gcc +       qemu-system-riscv32
                                            picolibc                        -M virt
=============  ===========================  ==============================  =====================

Every target object offers ``run`` (same contract as the host target: a
:class:`~ebnn_codegen.targets.base.RunResult` decoded from the harness
records), ``size`` (flash and static RAM of the model alone, from the
target's ``nm``; peak stack measured in the emulator), ``bench`` (exact
cycles on AVR, exact executed instructions on the qemu targets, per
inference and per block) and ``check_fits`` (refuses a model that does not
fit the chip, with the numbers).

The harnesses, start-up code, linker scripts, the libsimavr runner and the
qemu instruction-count plugin are C sources in ``firmware/``; the runner and
the plugin are compiled with the host compiler on first use into the cache.
Builds are cached by the hash of their sources and flags.  docs/targets.md
describes how each number is measured.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import codegen
from ..errors import ResourceError, ToolError
from ..ir import Model
from ..resources import resource_dir
from . import register
from .base import RunResult, cache_dir, check_inputs, decode_records, digest, record_bytes, require_tool

# Warnings every C file (generated or harness) must compile without, on every cross compiler.
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Wconversion", "-Wdouble-promotion", "-Werror"]
SECTIONS = ["-ffunction-sections", "-fdata-sections"]

MODE_RUN, MODE_SIZE, MODE_BLOCKS = 1, 2, 3
SENTINEL = "EBNN-HARNESS OK"
DEFAULT_TIMEOUT_S = float(os.environ.get("EBNN_EMULATOR_TIMEOUT", "300"))

_REGION = re.compile(r"^EBNN-REGION (\d+) (\d+)(?: (\d+))?$", re.M)


@dataclass(frozen=True)
class Chip:
    """A chip's memories and clock, and what the budget of ``check_fits`` leaves for the rest."""

    name: str
    flash_bytes: int
    sram_bytes: int
    clock_hz: int
    flash_reserved: int  # bootloader + application / sketch / runtime library
    sram_reserved: int  # application, libc / Arduino core, interrupt stack
    reserve_note: str

    @property
    def flash_budget(self) -> int:
        return self.flash_bytes - self.flash_reserved

    @property
    def sram_budget(self) -> int:
        return self.sram_bytes - self.sram_reserved


@dataclass
class Emulation:
    returncode: int
    output: bytes  # the binary channel: UART0 on simavr, the file ebnn_out.bin on qemu
    text: str  # the text channel (stderr on simavr, stdout + stderr on qemu) and the plugin log
    regions: list[tuple[int, int | None]] = field(default_factory=list)  # (count, stack bytes or None)


def _run_tool(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shown = " ".join(str(c) for c in cmd)
        raise ToolError(
            f"{what} failed (exit {proc.returncode}): {shown}\n{(proc.stderr + proc.stdout).strip()[-4000:]}"
        )
    return proc.stdout


_VERSIONS: dict[str, str] = {}
_MEASURED: dict[str, Emulation] = {}


def _version(cc: str) -> str:
    """The compiler's version (part of every cache key)."""
    if cc not in _VERSIONS:
        proc = subprocess.run([cc, "-dumpversion"], capture_output=True, text=True)
        _VERSIONS[cc] = proc.stdout.strip()
    return _VERSIONS[cc]


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished build directory into the cache (another process may have won the race)."""
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    return final


def host_tool(source: Path, out_name: str, flags: list[str], libs: list[str], what: str) -> Path:
    """Compile a host helper (the simavr runner, the qemu plugin) once into the cache."""
    cc = require_tool("cc", "gcc")
    text = source.read_text()
    d = cache_dir("host-tools") / digest(text, flags, libs, out_name)
    exe = d / out_name
    if exe.exists():
        return exe
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{out_name}.{os.getpid()}"
    _run_tool([cc, *flags, str(source), "-o", str(tmp), *libs], f"building the {what}")
    os.replace(tmp, exe)
    return exe


class McuTarget:
    """What the AVR and the qemu targets share: building, symbol sizes, checks, reports."""

    name = ""
    description = ""
    metric = ""  # "cycles" or "instructions"
    chip: Chip
    prefix = ""  # toolchain prefix, e.g. "avr-"
    packages = ""  # Debian packages of the toolchain and emulator
    tools: tuple[str, ...] = ()
    cflags: list[str] = []
    harness = ""  # the harness main, relative to firmware/
    firmware_sources: tuple[str, ...] = ()  # start-up code linked into every ELF
    link_inputs: tuple[str, ...] = ()  # linker scripts (part of the cache key)

    # -- building -----------------------------------------------------------------------

    @property
    def cc(self) -> str:
        return self.prefix + "gcc"

    def require(self) -> None:
        """Raise ToolError (with the Debian package) unless every tool of the target is installed."""
        for tool in self.tools:
            require_tool(tool, self.packages)

    def tools_available(self) -> bool:
        return all(shutil.which(t) for t in self.tools)

    def link_flags(self, fw: Path) -> list[str]:
        return []

    def _compile(self, src: Path, obj: Path, includes: list[Path]) -> None:
        inc = [f"-I{p}" for p in includes]
        _run_tool(
            [self.cc, *self.cflags, *SECTIONS, *STRICT, *inc, "-c", str(src), "-o", str(obj)],
            f"{self.cc} ({self.name})",
        )

    def _cached(self, kind: str, key: str, make: Any) -> Path:
        """A build directory of the cache: ``make(tmpdir)`` fills it once, then it is reused."""
        final = cache_dir(f"mcu-{self.name}") / f"{kind}-{key}"
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
        try:
            make(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _publish(tmp, final)

    def _link(self, d: Path, sources: list[Path], includes: list[Path], extra_objs: list[Path]) -> Path:
        fw = resource_dir("firmware")
        objs = []
        for i, src in enumerate(sources):
            objs.append(d / f"{i}_{src.stem}.o")
            self._compile(src, objs[-1], [d, *includes])
        elf = d / "firmware.elf"
        _run_tool(
            [
                self.cc,
                *self.cflags,
                *self.link_flags(fw),
                "-Wl,--gc-sections",
                *map(str, objs),
                *map(str, extra_objs),
                "-o",
                str(elf),
            ],
            f"linking the {self.name} firmware",
        )
        return elf

    def _key(self, *parts: Any) -> str:
        fw = resource_dir("firmware")
        fw_texts = {s: (fw / s).read_text() for s in (self.harness, *self.firmware_sources, *self.link_inputs)}
        return digest(fw_texts, self.cflags, self.link_flags(fw), STRICT, SECTIONS, _version(self.cc), *parts)

    def model_objects(self, graph: Model, kernels: str) -> tuple[Path, list[Path]]:
        """Compile the model's C (NAME.c, ebnn_runtime.c) once per model, kernels and flags."""
        require_tool(self.cc, self.packages)
        files = codegen.render_model(graph, kernels)
        names = [f"{graph.name}.o", "ebnn_runtime.o"]

        def make(d: Path) -> None:
            for fname, text in files.items():
                (d / fname).write_text(text)
            for obj in names:
                self._compile(d / (obj[:-2] + ".c"), d / obj, [d])

        d = self._cached("model", digest(files, self.cflags, STRICT, SECTIONS, _version(self.cc)), make)
        return d, [d / n for n in names]

    def harness_files(self, graph: Model, kernels: str, mode: int, samples: np.ndarray | None) -> dict[str, str]:
        """The generated glue of a harness: ebnn_harness.h, and ebnn_samples.c with ``samples``."""
        ctx = codegen.model_context(graph, kernels, {"target": self.name})
        ctx["mode"] = mode
        ctx["max_block_bytes"] = max([b.out_bytes for b in graph.hidden] + [1])
        ctx["num_samples"] = 0 if samples is None else len(samples)
        files = {"ebnn_harness.h": codegen.render_template("mcu_harness.h.j2", ctx)}
        if samples is not None:
            ctx["rows"] = codegen._hex(np.ascontiguousarray(samples, np.uint8).reshape(-1))
            ctx["input_bytes"] = graph.input_bytes
            files["ebnn_samples.c"] = codegen.render_template("mcu_samples.c.j2", ctx)
        return files

    def build(self, graph: Model, kernels: str, mode: int, samples: np.ndarray | None = None) -> Path:
        """The firmware ELF of one model, kernel strategy, harness mode and sample set (cached)."""
        model_dir, model_objs = self.model_objects(graph, kernels)
        fw = resource_dir("firmware")
        files = self.harness_files(graph, kernels, mode, samples)

        def make(d: Path) -> None:
            for fname, text in files.items():
                (d / fname).write_text(text)
            sources = [fw / self.harness, *(fw / s for s in self.firmware_sources)]
            sources += [d / f for f in files if f.endswith(".c")]
            self._link(d, sources, [model_dir], model_objs)

        return self._cached("elf", self._key(model_dir.name, files, mode), make) / "firmware.elf"

    def build_program(self, files: dict[str, str]) -> Path:
        """Compile and link other C sources (``files``: name -> text) with the target's flags,
        start-up code and libc: for tests of the emulator plumbing (a firmware that hangs)."""
        require_tool(self.cc, self.packages)
        fw = resource_dir("firmware")

        def make(d: Path) -> None:
            for fname, text in files.items():
                (d / fname).write_text(text)
            sources = [d / f for f in files if f.endswith(".c")] + [fw / s for s in self.firmware_sources]
            self._link(d, sources, [], [])

        return self._cached("prog", self._key(files), make) / "firmware.elf"

    # -- sizes --------------------------------------------------------------------------

    def _nm(self, path: Path) -> list[tuple[str, str, int]]:
        """Defined symbols with a size: (name, nm type letter, size)."""
        out = _run_tool(
            [require_tool(self.prefix + "nm", self.packages), "-S", "--defined-only", str(path)], f"{self.prefix}nm"
        )
        syms = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 4:  # the runtime's weak definitions (EBNN_SHARED): functions code, objects read-only
                syms.append((parts[3], _WEAK.get(parts[2], parts[2]), int(parts[1], 16)))
        return syms

    def image_sizes(self, elf: Path) -> dict[str, int]:
        """Whole firmware image (harness and libc included), from the target's `size`."""
        out = _run_tool([require_tool(self.prefix + "size", self.packages), "-B", str(elf)], f"{self.prefix}size")
        text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
        return {"image_flash_bytes": text + data, "image_sram_bytes": data + bss}

    def model_sizes(self, elf: Path, model_objs: list[Path]) -> dict[str, Any]:
        """Flash and static RAM of the model's own symbols (NAME.c and its share of the runtime)
        as linked into ``elf`` (unused functions removed by --gc-sections)."""
        wanted: dict[str, tuple[str, int]] = {}
        for obj in model_objs:
            for name, kind, size in self._nm(obj):
                if kind.lower() in "tdbr":
                    wanted[name] = (kind.lower(), size)
        linked: dict[str, list[tuple[str, int]]] = {}
        for name, kind, size in self._nm(elf):
            linked.setdefault(name, []).append((kind.lower(), size))
        code = const = data = bss = 0
        ram_symbols: dict[str, int] = {}
        for name, (kind, osize) in wanted.items():
            found = linked.get(name)
            if not found:
                continue  # removed as unused, or inlined
            if len(found) > 1:  # a local name that also exists elsewhere: take the same size
                found = [f for f in found if f[1] == osize] or found[:1]
            size = found[0][1]
            if kind == "t":
                code += size
            elif kind == "r":
                const += size
            elif kind == "d":
                data += size
                ram_symbols[name] = size
            else:
                bss += size
                ram_symbols[name] = size
        return {
            "flash_bytes": code + const + data,
            "sram_bytes": data + bss,
            "code_bytes": code,
            "constant_bytes": const,
            "data_bytes": data,
            "bss_bytes": bss,
            "sram_symbols": ram_symbols,
        }

    def size(self, graph: Model, kernels: str = "fast") -> dict[str, Any]:
        """Flash and static RAM of the model alone, peak stack measured in the emulator, and
        the report's prediction beside them."""
        return self._size(graph, kernels)[0]

    def _size(self, graph: Model, kernels: str) -> tuple[dict[str, Any], Emulation]:
        from .. import api

        self.require()
        elf = self.build(graph, kernels, MODE_SIZE, _sample(graph))
        _, model_objs = self.model_objects(graph, kernels)
        sizes = self.model_sizes(elf, model_objs)
        emu = self.measure(elf)
        stack = self._stack(emu)
        totals = api.report(graph)["totals"]
        out = {
            "target": self.name,
            "chip": self.chip.name,
            "kernels": kernels,
            "flash_bytes": sizes["flash_bytes"],
            "sram_bytes": sizes["sram_bytes"],
            "peak_stack_bytes": stack,
            "code_bytes": sizes["code_bytes"],
            "constant_bytes": sizes["constant_bytes"],
            "sram_symbols": sizes["sram_symbols"],
            **self.image_sizes(elf),
            "predicted_constant_bytes": totals["flash_bytes"],
            "predicted_sram_bytes": totals["static_ram_bytes"],
            "flash_budget_bytes": self.chip.flash_budget,
            "sram_budget_bytes": self.chip.sram_budget,
            "sram_needed_bytes": self._ram_needed(graph, sizes["sram_bytes"], stack),
        }
        return out, emu

    def _ram_needed(self, graph: Model, static: int, stack: int) -> int:
        """RAM the application needs for the model: its static RAM, the input and the scores
        it passes, and the stack of one inference."""
        return static + graph.input_bytes + 4 * graph.num_classes + stack

    def _stack(self, emu: Emulation) -> int:
        raise NotImplementedError

    def check_fits(self, graph: Model, kernels: str = "fast", measure: bool | None = None) -> dict[str, Any]:
        """Raise ResourceError (with the numbers) if the model does not fit the chip.

        First from the report's prediction (no tools needed); then, when the toolchain and
        the emulator are installed (or ``measure=True``), from the measured flash, static
        RAM and peak stack. Returns the numbers checked."""
        from .. import api

        chip = self.chip
        totals = api.report(graph)["totals"]
        flash = int(totals["flash_bytes"])
        ram = self._ram_needed(graph, int(totals["static_ram_bytes"]), 0)
        how = (
            f"predicted from the IR: flash = model constants; RAM = workspace {totals['static_ram_bytes']} B + "
            f"input {graph.input_bytes} B + scores {4 * graph.num_classes} B; code and stack come on top"
        )
        if measure is None:
            measure = self.tools_available()
        checked = {
            "target": self.name,
            "chip": chip.name,
            "flash_bytes": flash,
            "sram_needed_bytes": ram,
            "flash_budget_bytes": chip.flash_budget,
            "sram_budget_bytes": chip.sram_budget,
            "measured": False,
        }
        if flash <= chip.flash_budget and ram <= chip.sram_budget and measure:
            s = self.size(graph, kernels)
            flash, ram = s["flash_bytes"], s["sram_needed_bytes"]
            how = (
                f"measured: code {s['code_bytes']} B + constants {s['constant_bytes']} B; RAM = static "
                f"{s['sram_bytes']} B + input {graph.input_bytes} B + scores {4 * graph.num_classes} B + "
                f"peak stack {s['peak_stack_bytes']} B"
            )
            checked.update(flash_bytes=flash, sram_needed_bytes=ram, measured=True)
        problems = []
        if flash > chip.flash_budget:
            problems.append(f"flash {flash} B > {chip.flash_budget} B available")
        if ram > chip.sram_budget:
            problems.append(f"RAM {ram} B > {chip.sram_budget} B available")
        if problems:
            raise ResourceError(
                f"model '{graph.name}' ({kernels} kernels) does not fit {self.name} ({chip.name}, "
                f"{chip.flash_bytes} B flash, {chip.sram_bytes} B RAM): {'; '.join(problems)} ({how}; "
                f"{chip.reserve_note})",
                hint="use fewer channels or smaller layers (see `ebnn-gen report MODEL`), or a bigger target",
            )
        return checked

    # -- benchmark ----------------------------------------------------------------------

    def measure(self, elf: Path, timeout_s: float | None = None) -> Emulation:
        """Run a SIZE or BLOCKS firmware and check its verdict (once per ELF and process: the
        ELF's path is the hash of its sources, and the emulators are deterministic)."""
        key = str(elf)
        if key not in _MEASURED:
            emu = self.emulate(elf, timeout_s=timeout_s, regions=True)
            self._check(emu, 1, elf)
            _MEASURED[key] = emu
        return _MEASURED[key]

    def bench(self, graph: Model, kernels: str = "fast") -> dict[str, Any]:
        """Exact cycles (AVR) or executed instructions (qemu) of one inference, and per block."""
        from .. import api

        size, emu_size = self._size(graph, kernels)
        emu_blocks = self.measure(self.build(graph, kernels, MODE_BLOCKS, _sample(graph)))
        calib = emu_size.regions[0][0]
        total = emu_size.regions[1][0] - calib
        rep = api.report(graph)
        macs = int(rep["totals"]["binary_macs"])
        counts = [c - emu_blocks.regions[0][0] for c, _ in emu_blocks.regions[1:]]
        unit = self.metric
        per_mac = f"{unit}_per_mac"
        blocks, prev = [], 0
        for b, count in zip(rep["blocks"], counts, strict=True):
            n = count - prev
            prev = count
            blocks.append(
                {
                    "index": b["index"],
                    "type": b["type"],
                    "binary_macs": b["binary_macs"],
                    unit: n,
                    per_mac: round(n / b["binary_macs"], 3) if b["binary_macs"] else None,
                }
            )
        out = {
            "target": self.name,
            "chip": self.chip.name,
            "kernels": kernels,
            unit: total,
            "binary_macs": macs,
            per_mac: round(total / macs, 3) if macs else None,
            "clock_hz": self.chip.clock_hz,
            "ms_at_clock": round(1000.0 * total / self.chip.clock_hz, 4),
            "flash_bytes": size["flash_bytes"],
            "sram_bytes": size["sram_bytes"],
            "peak_stack_bytes": size["peak_stack_bytes"],
            "image_flash_bytes": size["image_flash_bytes"],
            "image_sram_bytes": size["image_sram_bytes"],
            "blocks": blocks,
        }
        out.update(self.bench_notes())
        return out

    def bench_notes(self) -> dict[str, str]:
        return {}

    # -- running ------------------------------------------------------------------------

    def emulate(
        self,
        elf: Path,
        inputs: bytes | None = None,
        timeout_s: float | None = None,
        regions: bool = False,
        max_cycles: int | None = None,
    ) -> Emulation:
        raise NotImplementedError

    def _check(self, emu: Emulation, n: int, elf: Path) -> None:
        line = f"{SENTINEL} {n}"
        if emu.returncode != 0 or not re.search(rf"^{line}$", emu.text, re.M):
            raise ToolError(
                f"{self.name}: the harness failed ({self.explain(emu.returncode)}; "
                f"expected the line '{line}'): {elf}\n{emu.text.strip()[-3000:]}"
            )

    def explain(self, rc: int) -> str:
        return f"exit code {rc}"

    def run(self, graph: Model, x: np.ndarray, kernels: str = "fast", timeout_s: float | None = None) -> RunResult:
        """Run the generated C on the emulator on uint8 inputs (N, C, H, W)."""
        raise NotImplementedError


def _sample(graph: Model) -> np.ndarray:
    """The input of the SIZE / BLOCKS harnesses: a fixed pseudo-random image."""
    rng = np.random.default_rng(12345)
    return rng.integers(0, 256, size=(1, *graph.input_shape), dtype=np.uint8)


def _timeout_error(target: str, emulator: str, timeout_s: float) -> ToolError:
    return ToolError(
        f"{target}: {emulator} timed out after {timeout_s:g} s (the firmware hangs, or needs more time: "
        f"set EBNN_EMULATOR_TIMEOUT)"
    )


# ---------------------------------------------------------------------------------------
# AVR: avr-gcc + avr-libc, libsimavr
# ---------------------------------------------------------------------------------------


class AvrTarget(McuTarget):
    name = "avr"
    description = "ATmega328P (Arduino Uno), avr-gcc -Os, cycle-exact in simavr"
    metric = "cycles"
    chip = Chip(
        "ATmega328P",
        32768,
        2048,
        16_000_000,
        512 + 2048,
        384,
        "budget: flash minus 512 B bootloader and 2 KB for the sketch and Arduino core; "
        "RAM minus 384 B for the Arduino core (Serial buffers), the sketch and interrupts",
    )
    prefix = "avr-"
    packages = "gcc-avr binutils-avr avr-libc simavr libsimavr-dev libelf-dev pkg-config"
    tools = ("avr-gcc", "avr-nm", "avr-size", "pkg-config", "cc")
    mcu = "atmega328p"
    cflags = ["-mmcu=atmega328p", "-DF_CPU=16000000UL", "-Os"]
    harness = "avr/harness.c"
    runner_source = "avr/simavr_runner.c"

    def tools_available(self) -> bool:
        if not super().tools_available():
            return False
        return subprocess.run(["pkg-config", "--exists", "simavr"]).returncode == 0

    def runner(self) -> Path:
        require_tool("pkg-config", "pkg-config")
        probe = subprocess.run(["pkg-config", "--cflags", "--libs", "simavr"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise ToolError(
                "libsimavr not found by pkg-config", hint="install the Debian packages libsimavr-dev libelf-dev"
            )
        flags = probe.stdout.split()
        cflags = ["-O2", *[f for f in flags if f.startswith("-I")]]
        libs = [f for f in flags if not f.startswith("-I")] + ["-lelf"]
        return host_tool(resource_dir("firmware") / self.runner_source, "simavr_runner", cflags, libs, "simavr runner")

    def emulate(
        self,
        elf: Path,
        inputs: bytes | None = None,
        timeout_s: float | None = None,
        regions: bool = False,
        max_cycles: int | None = None,
    ) -> Emulation:
        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        max_cycles = max_cycles if max_cycles is not None else 10**13
        cmd = [str(self.runner()), str(elf), self.mcu, str(self.chip.clock_hz), str(max_cycles)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise _timeout_error(self.name, "simavr", timeout_s) from None
        text = proc.stderr.decode("latin-1")
        if proc.returncode == 101:
            raise ToolError(
                f"{self.name}: simavr timed out: cycle limit of {max_cycles} cycles reached "
                f"(the firmware hangs?)\n{text.strip()[-2000:]}"
            )
        found = [(int(m[1]), int(m[2] or 0)) for m in _REGION.findall(text)]
        return Emulation(proc.returncode, proc.stdout, text, found)

    def explain(self, rc: int) -> str:
        return {100: "the AVR crashed (exit 100)", 101: "cycle limit (exit 101)", 65: "cannot load the ELF"}.get(
            rc, f"exit code {rc}"
        )

    def _stack(self, emu: Emulation) -> int:
        return int(emu.regions[1][1] or 0)

    def run(self, graph: Model, x: np.ndarray, kernels: str = "fast", timeout_s: float | None = None) -> RunResult:
        """Inputs go into flash (PROGMEM) in a generated C file, as many per ELF as the 32 KB
        flash holds; each ELF streams its records over the UART.

        The run harness keeps the input, the workspace and a trace of every hidden block in
        SRAM.  When those do not fit the ATmega328P's 2 KB (a model that fits the Uno in use
        can still need more to be *verified* block by block), the same firmware is built for
        the ATmega644P: the same avr5 core, instruction set, timings and USART/GPIOR addresses,
        with 4 KB of SRAM; ``stats["emulated_mcu"]`` says which chip ran.
        """
        try:
            return self._run(graph, x, kernels, timeout_s)
        except (ResourceError, ToolError) as exc:
            text = str(exc)
            if type(self) is not AvrTarget or not (
                "not within region" in text or "overflowed" in text or "static RAM" in text
            ):
                raise
        result = _AVR_VERIFY.run(graph, x, kernels, timeout_s)
        result.stats["emulated_mcu"] = _AVR_VERIFY.mcu
        return result

    def _run(self, graph: Model, x: np.ndarray, kernels: str, timeout_s: float | None) -> RunResult:
        x = check_inputs(graph, x)
        self.require()
        n = len(x)
        if n == 0:
            return decode_records(graph, b"", 0)
        ib = graph.input_bytes
        chunk, elf = n, None
        if n * ib < self.chip.flash_bytes:
            try:
                elf = self.build(graph, kernels, MODE_RUN, x)
            except ToolError as exc:
                if "overflowed" not in str(exc):
                    raise
        if elf is None:
            # too many inputs for the flash: measure the harness with one, then split
            fixed = self.image_sizes(self.build(graph, kernels, MODE_RUN, x[:1]))["image_flash_bytes"] - ib
            chunk = (self.chip.flash_bytes - fixed) // ib
            if chunk < 1:
                raise ResourceError(
                    f"{self.name}: the run harness with one {ib}-byte input needs {fixed + ib} B of flash; "
                    f"the {self.chip.name} has {self.chip.flash_bytes} B"
                ) from None
            elf = self.build(graph, kernels, MODE_RUN, x[:chunk])
        sizes = self.image_sizes(elf)
        if sizes["image_sram_bytes"] + 128 > self.chip.sram_bytes:
            raise ResourceError(
                f"{self.name}: the run harness needs {sizes['image_sram_bytes']} B of static RAM (input, workspace, "
                f"trace, scores) + stack; the {self.chip.name} has {self.chip.sram_bytes} B"
            )
        data = bytearray()
        for start in range(0, n, chunk):
            part = x[start : start + chunk]
            if start:
                elf = self.build(graph, kernels, MODE_RUN, part)
            emu = self.emulate(elf, timeout_s=timeout_s)
            self._check(emu, len(part), elf)
            data += emu.output
        result = decode_records(graph, bytes(data), n)
        result.stats = {"emulator": "simavr", "samples_per_elf": chunk, "emulated_mcu": self.mcu}
        return result


class _AvrVerifyTarget(AvrTarget):
    """The ATmega644P (avr5, 4 KB SRAM, 64 KB flash): runs the verification harness of models
    whose harness needs more SRAM than the ATmega328P has (see AvrTarget.run)."""

    name = "avr"
    chip = Chip("ATmega644P", 65536, 4096, 16_000_000, 512 + 2048, 384, "verification harness only")
    mcu = "atmega644p"
    cflags = ["-mmcu=atmega644p", "-DF_CPU=16000000UL", "-Os"]


_AVR_VERIFY = _AvrVerifyTarget()


# ---------------------------------------------------------------------------------------
# qemu targets: semihosting, instruction counts from a TCG plugin
# ---------------------------------------------------------------------------------------


class QemuTarget(McuTarget):
    metric = "instructions"
    harness = "qemu/harness.c"
    plugin_source = "qemu/icount_plugin.c"
    qemu = ""
    machine = ""
    qemu_extra: list[str] = []

    def __init__(self, name: str, description: str, chip: Chip, cflags: list[str], **kw: Any) -> None:
        self.name = name
        self.description = description
        self.chip = chip
        self.cflags = cflags
        for k, v in kw.items():
            setattr(self, k, v)

    def plugin(self) -> Path:
        return host_tool(
            resource_dir("firmware") / self.plugin_source,
            "libicount.so",
            ["-shared", "-fPIC", "-O2", "-fvisibility=hidden"],
            [],
            "qemu plugin",
        )

    def emulate(
        self,
        elf: Path,
        inputs: bytes | None = None,
        timeout_s: float | None = None,
        regions: bool = False,
        max_cycles: int | None = None,
    ) -> Emulation:
        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        qemu = require_tool(self.qemu, self.packages)
        with tempfile.TemporaryDirectory(prefix="ebnn-qemu-") as work:
            wd = Path(work)
            cmd = [
                qemu,
                "-M",
                self.machine,
                *self.qemu_extra,
                "-nographic",
                "-monitor",
                "none",
                "-serial",
                "none",
                "-semihosting-config",
                "enable=on,target=native",
            ]
            if regions:
                syms = {name: addr for name, addr in self._addresses(elf)}
                cmd += [
                    "-plugin",
                    f"{self.plugin()},start=0x{syms['h_bench_start']:x},stop=0x{syms['h_bench_stop']:x}",
                    "-d",
                    "plugin",
                    "-D",
                    str(wd / "plugin.log"),
                ]
            cmd += ["-kernel", str(elf)]
            if inputs is not None:
                (wd / "ebnn_in.bin").write_bytes(inputs)
            try:
                proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, cwd=wd)
            except subprocess.TimeoutExpired:
                raise _timeout_error(self.name, Path(qemu).name, timeout_s) from None
            out_file = wd / "ebnn_out.bin"
            records = out_file.read_bytes() if out_file.exists() else b""
            log = (wd / "plugin.log").read_text(errors="replace") if regions and (wd / "plugin.log").exists() else ""
        text = proc.stdout.decode("latin-1") + proc.stderr.decode("latin-1") + log
        found = [(int(m[0]), int(m[1])) for m in _REGION.findall(log)]
        return Emulation(proc.returncode, records, text, [(c, None) for _, c in found])

    def _addresses(self, elf: Path) -> list[tuple[str, int]]:
        out = _run_tool(
            [require_tool(self.prefix + "nm", self.packages), "--defined-only", str(elf)], f"{self.prefix}nm"
        )
        res = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3:
                res.append((parts[2], int(parts[0], 16)))
        return res

    def explain(self, rc: int) -> str:
        if self.prefix.startswith("arm") and 128 < rc < 128 + 16:
            names = {3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault"}
            return f"exit {rc}: {names.get(rc - 128, 'exception')} {rc - 128}"
        if rc == 255 and self.prefix.startswith("riscv"):
            return "exit 255: trap"
        return f"exit code {rc}"

    def _stack(self, emu: Emulation) -> int:
        m = re.search(r"^EBNN-STACK (-?\d+)$", emu.text, re.M)
        if m is None:
            raise ToolError(f"{self.name}: the size harness printed no stack measurement")
        used = int(m.group(1))
        if used < 0:
            raise ToolError(f"{self.name}: the inference used more stack than the painted window")
        return used

    def bench_notes(self) -> dict[str, str]:
        return {"ms_at_clock_assumes": "one instruction per cycle (qemu counts instructions, not cycles)"}

    def run(self, graph: Model, x: np.ndarray, kernels: str = "fast", timeout_s: float | None = None) -> RunResult:
        """Inputs and records go through host files (semihosting), one ELF per model."""
        x = check_inputs(graph, x)
        self.require()
        elf = self.build(graph, kernels, MODE_RUN)
        emu = self.emulate(elf, inputs=x.tobytes(), timeout_s=timeout_s)
        self._check(emu, len(x), elf)
        if len(emu.output) != len(x) * record_bytes(graph):
            raise ToolError(f"{self.name}: the harness wrote {len(emu.output)} bytes, expected {len(x)} records")
        result = decode_records(graph, emu.output, len(x))
        result.stats = {"emulator": f"{self.qemu} -M {self.machine}"}
        return result


ARM_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
ARM_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size", "qemu-system-arm", "cc")


class CortexMTarget(QemuTarget):
    prefix = "arm-none-eabi-"
    packages = ARM_PACKAGES
    tools = ARM_TOOLS
    qemu = "qemu-system-arm"
    firmware_sources = ("cortex-m/startup.c",)
    linker_script = "cortex-m/mps2.ld"
    link_inputs = ("cortex-m/mps2.ld", "cortex-m/microbit.ld", "cortex-m/cortex_m_sections.ld")

    def link_flags(self, fw: Path) -> list[str]:
        script = fw / self.linker_script
        return ["--specs=nano.specs", "--specs=rdimon.specs", f"-L{script.parent}", f"-T{script}"]


RISCV_FLASH = "-Wl,--defsym=__flash=0x80000000,--defsym=__flash_size=0x400000"
RISCV_RAM = "-Wl,--defsym=__ram=0x80400000,--defsym=__ram_size=0x400000"


class RiscvTarget(QemuTarget):
    prefix = "riscv64-unknown-elf-"
    packages = "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc"
    tools = (
        "riscv64-unknown-elf-gcc",
        "riscv64-unknown-elf-nm",
        "riscv64-unknown-elf-size",
        "qemu-system-riscv32",
        "cc",
    )
    qemu = "qemu-system-riscv32"
    machine = "virt"
    qemu_extra = ["-bios", "none"]

    def link_flags(self, fw: Path) -> list[str]:
        return ["--oslib=semihost", "--crt0=semihost", RISCV_FLASH, RISCV_RAM]


_WEAK = {"W": "T", "w": "t", "V": "R", "v": "r"}  # nm letters of weak symbols -> their kind

_M_NOTE = "budget: flash minus {f} KB and RAM minus {r} KB for the application, libc and start-up code"

TARGETS: list[McuTarget] = [
    AvrTarget(),
    CortexMTarget(
        "cortex-m0",
        "Cortex-M0 (nRF51822, micro:bit), arm-none-eabi-gcc -O2, instructions in qemu -M microbit",
        Chip("nRF51822", 256 * 1024, 16 * 1024, 16_000_000, 16 * 1024, 2 * 1024, _M_NOTE.format(f=16, r=2)),
        ["-mcpu=cortex-m0", "-mthumb", "-O2"],
        machine="microbit",
        linker_script="cortex-m/microbit.ld",
    ),
    CortexMTarget(
        "cortex-m3",
        "Cortex-M3 (STM32F103C8 class), arm-none-eabi-gcc -O2, instructions in qemu -M mps2-an385",
        Chip("STM32F103C8", 64 * 1024, 20 * 1024, 72_000_000, 8 * 1024, 2 * 1024, _M_NOTE.format(f=8, r=2)),
        ["-mcpu=cortex-m3", "-mthumb", "-O2"],
        machine="mps2-an385",
    ),
    CortexMTarget(
        "cortex-m4",
        "Cortex-M4F (STM32F411CE class), hard float, instructions in qemu -M mps2-an386",
        Chip("STM32F411CE", 512 * 1024, 128 * 1024, 100_000_000, 16 * 1024, 4 * 1024, _M_NOTE.format(f=16, r=4)),
        ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2"],
        machine="mps2-an386",
    ),
    RiscvTarget(
        "rv32imc",
        "RISC-V rv32imc (ESP32-C3 class), picolibc, instructions in qemu-system-riscv32 -M virt",
        Chip(
            "ESP32-C3",
            1024 * 1024,
            320 * 1024,
            160_000_000,
            256 * 1024,
            64 * 1024,
            "budget: the default 1 MB app partition minus 256 KB and 320 KB of SRAM minus 64 KB for ESP-IDF",
        ),
        ["-march=rv32imc", "-mabi=ilp32", "-O2", "--specs=picolibc.specs"],
    ),
]

for _t in TARGETS:
    register(_t.name, _t)


def get(name: str) -> McuTarget:
    for t in TARGETS:
        if t.name == name:
            return t
    raise KeyError(name)
