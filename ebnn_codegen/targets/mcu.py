"""What every emulated microcontroller target shares: firmware builds, sizes, the fit check.

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

A :class:`McuTarget` is configured by its dataclass fields: a chip (:mod:`.chips`), a cross
compiler (:class:`~.toolchain.CrossCompiler`), a :class:`LinkRecipe` and a harness main in
``firmware/``.  The emulator drivers live in :mod:`.simavr` and :mod:`.qemu`, the targets
built on them in :mod:`.avr` and :mod:`.qemu_targets`; the benchmark in :mod:`.bench`; ELF
accounting in :mod:`.elfsize`; the fit policy in :mod:`.fit`.  Builds are cached by the hash of
their sources and flags.  docs/targets.md describes how each number is measured.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import codegen, costs
from ..codegen.traits import PORTABLE, TargetTraits
from ..errors import FitError, LinkOverflowError, ToolError
from ..ir import Model
from ..resources import resource_dir
from . import elfsize, fit
from .base import Emulation, RunResult, SerialOps
from .bench import bench
from .chips import Chip
from .harness import MODE_BLOCKS, MODE_RUN, MODE_SIZE, SENTINEL, harness_files, sample_input
from .toolchain import CrossCompiler, cached_dir, digest, require_tool

DEFAULT_TIMEOUT_S = float(os.environ.get("EBNN_EMULATOR_TIMEOUT", "300"))
OVERFLOW_MARK = "link-overflow.txt"

_MEASURED: dict[str, Emulation] = {}


@dataclass(frozen=True)
class LinkRecipe:
    """How a target links a firmware: flags (``{fw}`` stands for the firmware folder), the
    start-up sources linked into every ELF and the linker scripts (both relative to firmware/)."""

    flags: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    scripts: tuple[str, ...] = ()

    def resolve(self, fw: Path) -> list[str]:
        return [f.format(fw=fw) for f in self.flags]


@dataclass
class McuTarget:
    """A microcontroller target: a chip, a cross compiler, a link recipe and a harness main."""

    name: str
    description: str
    chip: Chip
    toolchain: CrossCompiler
    link: LinkRecipe
    harness: str  # the harness main, relative to firmware/
    tools: tuple[str, ...]  # every program the target needs (toolchain, emulator, host cc)
    packages: str  # the Debian packages that install them
    metric: str = "cycles"  # what bench counts: "cycles" or "instructions"
    traits: TargetTraits = PORTABLE  # what its generated kernels may assume (codegen.traits)

    @property
    def serial(self) -> SerialOps | None:
        return None  # emulated: no board behind it

    @property
    def prefix(self) -> str:
        return self.toolchain.prefix

    @property
    def cc(self) -> str:
        return self.toolchain.cc

    # -- tools --------------------------------------------------------------------------

    def require(self) -> None:
        """Raise ToolError (with the Debian package) unless every tool of the target is installed."""
        for tool in self.tools:
            require_tool(tool, self.packages)

    def available(self) -> bool:
        import shutil

        return all(shutil.which(t) for t in self.tools)

    def tools_available(self) -> bool:
        return self.available()

    # -- building -----------------------------------------------------------------------

    def _key(self, *parts: Any) -> str:
        fw = resource_dir("firmware")
        fw_texts = {s: (fw / s).read_text() for s in (self.harness, *self.link.sources, *self.link.scripts)}
        return digest(fw_texts, self.link.resolve(fw), *self.toolchain.key(), *parts)

    def _link(self, d: Path, sources: list[Path], includes: list[Path], extra_objs: list[Path]) -> None:
        objs = []
        for i, src in enumerate(sources):
            objs.append(d / f"{i}_{src.stem}.o")
            self.toolchain.compile(src, objs[-1], [d, *includes], f"{self.cc} ({self.name})")
        overflow = self.toolchain.link(
            [*objs, *extra_objs],
            self.link.resolve(resource_dir("firmware")),
            d / "firmware.elf",
            f"linking the {self.name} firmware",
        )
        if overflow is not None:
            (d / OVERFLOW_MARK).write_text(f"{overflow.region} {overflow.overflow_bytes or -1}\n")

    def model_objects(self, graph: Model, kernels: str) -> tuple[Path, list[Path]]:
        """Compile the model's C (NAME.c, ebnn_runtime.c) once per model, kernels and flags."""
        require_tool(self.cc, self.packages)
        files = codegen.render_model(graph, kernels, traits=self.traits)
        names = [f"{graph.name}.o", "ebnn_runtime.o"]

        def make(d: Path) -> None:
            for fname, text in files.items():
                (d / fname).write_text(text)
            for obj in names:
                self.toolchain.compile(d / (obj[:-2] + ".c"), d / obj, [d], f"{self.cc} ({self.name})")

        d = cached_dir(f"mcu-{self.name}", "model-" + digest(files, *self.toolchain.key()), make)
        return d, [d / n for n in names]

    def harness_files(self, graph: Model, kernels: str, mode: int, samples: np.ndarray | None) -> dict[str, str]:
        return harness_files(graph, kernels, self.name, mode, samples)

    def build_kept(
        self, graph: Model, kernels: str, mode: int, samples: np.ndarray | None = None
    ) -> tuple[Path, LinkOverflowError | None]:
        """The firmware ELF of one model, kernel strategy, harness mode and sample set (cached),
        and the linker's overflow when the image does not fit the chip (the ELF is kept for
        measuring, but cannot run)."""
        model_dir, model_objs = self.model_objects(graph, kernels)
        fw = resource_dir("firmware")
        files = self.harness_files(graph, kernels, mode, samples)

        def make(d: Path) -> None:
            for fname, text in files.items():
                (d / fname).write_text(text)
            sources = [fw / self.harness, *(fw / s for s in self.link.sources)]
            sources += [d / f for f in files if f.endswith(".c")]
            self._link(d, sources, [model_dir], model_objs)

        d = cached_dir(f"mcu-{self.name}", "elf-" + self._key(model_dir.name, files, mode), make)
        return d / "firmware.elf", _overflow_of(d)

    def build(self, graph: Model, kernels: str, mode: int, samples: np.ndarray | None = None) -> Path:
        """As :meth:`build_kept`; a linker overflow raises FitError with the overflow (never the linker's text)."""
        elf, overflow = self.build_kept(graph, kernels, mode, samples)
        if overflow is not None:
            what = "flash" if overflow.is_flash else "RAM"
            by = f" by {overflow.overflow_bytes:,} B" if overflow.overflow_bytes else ""
            raise FitError(
                f"model '{graph.name}' ({kernels} kernels) does not fit {self.name}: its firmware overflows "
                f"the {self.chip.name}'s {what}{by} (image {self.image_sizes(elf)['image_flash_bytes']:,} B flash, "
                f"{self.image_sizes(elf)['image_sram_bytes']:,} B static RAM; the chip has "
                f"{self.chip.flash_bytes:,} B and {self.chip.sram_bytes:,} B)",
                hint=fit.HINT,
            ) from overflow
        return elf

    def build_program(self, files: dict[str, str]) -> Path:
        """Compile and link other C sources (``files``: name -> text) with the target's flags,
        start-up code and libc: for tests of the emulator plumbing (a firmware that hangs)."""
        require_tool(self.cc, self.packages)
        fw = resource_dir("firmware")

        def make(d: Path) -> None:
            for fname, text in files.items():
                (d / fname).write_text(text)
            sources = [d / f for f in files if f.endswith(".c")] + [fw / s for s in self.link.sources]
            self._link(d, sources, [], [])

        d = cached_dir(f"mcu-{self.name}", "prog-" + self._key(files), make)
        if (overflow := _overflow_of(d)) is not None:
            raise overflow
        return d / "firmware.elf"

    # -- sizes and the fit check -----------------------------------------------------------

    def image_sizes(self, elf: Path) -> dict[str, int]:
        return elfsize.image_sizes_of(self.toolchain, elf)

    def symbols(self, path: Path) -> list[elfsize.Symbol]:
        """Defined symbols with a size, (name, nm type letter, size), of an object or ELF."""
        return elfsize.nm_sizes_of(self.toolchain, path)

    _nm = symbols  # the name callers used before the split

    def size(self, graph: Model, kernels: str = "fast") -> dict[str, Any]:
        """Flash and static RAM of the model alone, peak stack measured in the emulator, and
        the report's prediction beside them.  A model that does not fit raises FitError."""
        return self.measure_size(graph, kernels)[0]

    def measure_size(self, graph: Model, kernels: str) -> tuple[dict[str, Any], Emulation, fit.Needs]:
        """:meth:`size`, the SIZE run's emulation and what the fit check compares."""
        self.require()
        elf, overflow = self.build_kept(graph, kernels, MODE_SIZE, sample_input(graph))
        _, model_objs = self.model_objects(graph, kernels)
        sizes = elfsize.model_sizes_of(self.toolchain, elf, model_objs)
        if overflow is not None:
            self._refuse_overflow(graph, kernels, sizes, overflow)
        emu = self.measure(elf)
        try:
            stack = self.stack_of(emu)
        except fit.StackWindowError as short:  # refuse when even the stack's lower bound is over the budget
            low = fit.measured(graph, sizes.code_bytes, sizes.constant_bytes, sizes.data_bytes, sizes.sram_bytes, 0)
            low = fit.at_least(low, short)
            fit.judge(self.name, self.chip, graph, kernels, low)
            raise
        totals = costs.report(graph)["totals"]
        needs = fit.measured(graph, sizes.code_bytes, sizes.constant_bytes, sizes.data_bytes, sizes.sram_bytes, stack)
        out = {
            "target": self.name,
            "chip": self.chip.name,
            "kernels": kernels,
            "flash_bytes": sizes.flash_bytes,
            "sram_bytes": sizes.sram_bytes,
            "peak_stack_bytes": stack,
            "code_bytes": sizes.code_bytes,
            "constant_bytes": sizes.constant_bytes,
            "sram_symbols": sizes.sram_symbols,
            **self.image_sizes(elf),
            "predicted_constant_bytes": totals["flash_bytes"],
            "predicted_sram_bytes": totals["static_ram_bytes"],
            "flash_budget_bytes": self.chip.flash_budget,
            "sram_budget_bytes": self.chip.sram_budget,
            "sram_needed_bytes": needs.sram_bytes,
        }
        return out, emu, needs

    def _refuse_overflow(
        self, graph: Model, kernels: str, sizes: elfsize.ModelSizes, overflow: LinkOverflowError
    ) -> None:
        """The size firmware did not link: refuse with the measured numbers (never the linker's text)."""
        needs = fit.measured(graph, sizes.code_bytes, sizes.constant_bytes, sizes.data_bytes, sizes.sram_bytes, None)
        fit.judge(self.name, self.chip, graph, kernels, needs)  # raises when the model alone is over
        over = f" by {overflow.overflow_bytes:,} B" if overflow.overflow_bytes else ""
        what = "flash" if overflow.is_flash else "RAM"
        raise FitError(
            f"model '{graph.name}' ({kernels} kernels) does not fit {self.name}: the model needs "
            f"{needs.flash_bytes:,} B flash and {needs.sram_bytes:,} B RAM, but with the smallest "
            f"application the {self.chip.name}'s {what} overflows{over}",
            hint=fit.HINT,
        )

    def check_fits(self, graph: Model, kernels: str = "fast", measure: bool | None = None) -> fit.FitReport:
        """Raise FitError (with the numbers) if the model does not fit the chip.

        First from the IR's prediction (no tools needed); then, when the toolchain and the
        emulator are installed (or ``measure=True``), from the linked code, constants and
        static RAM and the peak stack measured in the emulator."""
        report = fit.judge(self.name, self.chip, graph, kernels, fit.predicted(graph))
        if measure is None:
            measure = self.available()
        if not measure:
            return report
        return fit.judge(self.name, self.chip, graph, kernels, self.measure_size(graph, kernels)[2])

    # -- running the emulator --------------------------------------------------------------

    def measure(self, elf: Path, timeout_s: float | None = None) -> Emulation:
        """Run a SIZE or BLOCKS firmware and check its verdict (once per ELF and process: the
        ELF's path is the hash of its sources, and the emulators are deterministic)."""
        key = str(elf)
        if key not in _MEASURED:
            emu = self.emulate(elf, timeout_s=timeout_s, regions=True)
            self.check_verdict(emu, 1, elf)
            _MEASURED[key] = emu
        return _MEASURED[key]

    def check_verdict(self, emu: Emulation, n: int, elf: Path) -> None:
        """The harness must exit 0 after printing ``EBNN-HARNESS OK n``."""
        line = f"{SENTINEL} {n}"
        if emu.returncode != 0 or not re.search(rf"^{line}$", emu.text, re.M):
            raise ToolError(
                f"{self.name}: the harness failed ({self.explain(emu.returncode)}; "
                f"expected the line '{line}'): {elf}\n{emu.text.strip()[-3000:]}"
            )

    def bench(self, graph: Model, kernels: str = "fast", samples: int = 256) -> dict[str, Any]:
        """Exact cycles (AVR) or executed instructions (qemu) of one inference, and per block."""
        return bench(self, graph, kernels)

    def bench_notes(self) -> dict[str, str]:
        return {}

    def emulate(
        self,
        elf: Path,
        inputs: bytes | None = None,
        timeout_s: float | None = None,
        regions: bool = False,
        max_cycles: int | None = None,
    ) -> Emulation:
        raise NotImplementedError

    def stack_of(self, emu: Emulation) -> int:
        """The peak stack of one inference, from a SIZE run."""
        raise NotImplementedError

    def explain(self, rc: int) -> str:
        return f"exit code {rc}"

    def run(self, graph: Model, x: np.ndarray, kernels: str = "fast", timeout_s: float | None = None) -> RunResult:
        """Run the generated C on the emulator on uint8 inputs (N, C, H, W)."""
        raise NotImplementedError


def _overflow_of(d: Path) -> LinkOverflowError | None:
    """The overflow a cached build recorded (the linker's verdict, kept beside the ELF)."""
    mark = d / OVERFLOW_MARK
    if not mark.exists():
        return None
    region, over = mark.read_text().split()
    n = int(over)
    return LinkOverflowError(
        f"region '{region}' overflowed" + (f" by {n} bytes" if n >= 0 else ""), region, n if n >= 0 else None
    )


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MODE_BLOCKS",
    "MODE_RUN",
    "MODE_SIZE",
    "SENTINEL",
    "LinkRecipe",
    "McuTarget",
    "sample_input",
]
