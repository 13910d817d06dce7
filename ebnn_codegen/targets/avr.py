"""The AVR target: avr-gcc + avr-libc, run cycle-exact in simavr (:mod:`.simavr`).

Inputs go into flash (PROGMEM) in a generated C file, as many per ELF as the 32 KB flash
holds (and at most 32,767 bytes, avr-gcc's largest object); a run of more inputs builds
and emulates one ELF per batch (the model's objects are compiled once) and concatenates
the records: any number of samples runs on the ATmega328P.

The run harness keeps the input, the workspace and a trace of every hidden block in SRAM.
When those do not fit the ATmega328P's 2 KB (a model that fits the Uno can still need more
to be *verified* block by block), the same firmware runs on the ATmega644P (``verify_on``:
the same avr5 core, instruction set, timings and USART/GPIOR addresses, 4 KB of SRAM), and
the result says so: ``stats["chip"]`` names the chip that ran, ``stats["chip_note"]`` why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..codegen.traits import TargetTraits
from ..errors import CodegenError, FitError
from ..ir import Model
from .base import Emulation, RunResult, check_inputs, decode_records
from .chips import CHIPS
from .mcu import DEFAULT_TIMEOUT_S, MODE_RUN, LinkRecipe, McuTarget
from .simavr import Simavr
from .toolchain import CrossCompiler

MAX_OBJECT_BYTES = 32767  # avr-gcc: the largest array (16-bit pointers)
STACK_MARGIN = 128  # RAM the run harness needs beyond its static RAM, at least
CLOSE_CALL = 512  # RAM left over below which the run harness's stack is measured, not assumed
RUN_FRAMES = 16  # the run harness's frames above the SIZE run's peak stack (its trace copies are leaves)
PACKAGES = "gcc-avr binutils-avr avr-libc simavr libsimavr-dev libelf-dev pkg-config"
TOOLS = ("avr-gcc", "avr-nm", "avr-size", "pkg-config", "cc")


@dataclass
class AvrTarget(McuTarget):
    """An AVR chip in simavr: ``mcu`` is the simavr/avr-gcc MCU name."""

    mcu: str = "atmega328p"
    simavr: Simavr = field(default_factory=Simavr)
    verify_on: AvrTarget | None = None  # a bigger AVR for harnesses that need more RAM than ``chip``

    def available(self) -> bool:
        return super().available() and self.simavr.available()

    def emulate(
        self,
        elf: Path,
        inputs: bytes | None = None,
        timeout_s: float | None = None,
        regions: bool = False,
        max_cycles: int | None = None,
    ) -> Emulation:
        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        return self.simavr.emulate(elf, self.mcu, self.chip.clock_hz, timeout_s, max_cycles, self.name)

    def explain(self, rc: int) -> str:
        return self.simavr.explain(rc)

    def stack_of(self, emu: Emulation) -> int:
        return int(emu.regions[1][1] or 0)

    def run(self, graph: Model, x: np.ndarray, kernels: str = "fast", timeout_s: float | None = None) -> RunResult:
        """Run on uint8 inputs (N, C, H, W), in batches of what one ELF's flash holds."""
        x = check_inputs(graph, x)
        self.require()
        if len(x) == 0:
            result = decode_records(graph, b"", 0)
            result.stats = {"emulator": "simavr", "chip": self.chip.name, "emulated_mcu": self.mcu}
            return result
        per_elf, why = self.samples_per_elf(graph, kernels, x)
        if per_elf:
            return self._run_batches(graph, kernels, x, per_elf, timeout_s)
        if self.verify_on is None:
            raise FitError(f"{self.name}: {why}")
        result = self.verify_on.run(graph, x, kernels, timeout_s)
        result.stats["chip_note"] = why
        return result

    def samples_per_elf(self, graph: Model, kernels: str, x: np.ndarray) -> tuple[int, str]:
        """How many inputs one run ELF holds on this chip, or 0 and why the run harness does not fit."""
        ib = graph.input_bytes
        first = x if len(x) * ib <= MAX_OBJECT_BYTES else x[:1]
        elf, overflow = self.build_kept(graph, kernels, MODE_RUN, first)
        image = self.image_sizes(elf)
        ram = image["image_sram_bytes"] + STACK_MARGIN
        if ram + CLOSE_CALL > self.chip.sram_bytes:  # near the limit: the model's measured stack decides
            ram = image["image_sram_bytes"] + self.run_stack(graph, kernels)
        chip = self.chip
        if ram > chip.sram_bytes or (overflow is not None and not overflow.is_flash):
            return 0, (
                f"its verification harness needs {ram:,} B of RAM (input, workspace, a trace of every block, "
                f"stack), the {chip.name} has {chip.sram_bytes:,} B"
            )
        if overflow is None and first is x:
            return len(x), ""
        fixed = image["image_flash_bytes"] - len(first) * ib
        per_elf = min((chip.flash_bytes - fixed - 2) // ib, MAX_OBJECT_BYTES // ib)
        if per_elf < 1:
            return 0, (
                f"its verification harness with one {ib:,} B input needs {fixed + ib:,} B of flash, "
                f"the {chip.name} has {chip.flash_bytes:,} B"
            )
        return per_elf, ""

    def run_stack(self, graph: Model, kernels: str) -> int:
        """Stack the run harness needs beyond its static RAM: the model's peak stack measured in a
        SIZE run (cached per ELF) plus the harness's own frames (``RUN_FRAMES``), at least
        ``STACK_MARGIN``; ``STACK_MARGIN`` when the SIZE firmware cannot be measured on this chip."""
        try:
            stack = int(self.measure_size(graph, kernels)[0]["peak_stack_bytes"])
        except CodegenError:
            return STACK_MARGIN
        return max(STACK_MARGIN, stack + RUN_FRAMES)

    def _run_batches(
        self, graph: Model, kernels: str, x: np.ndarray, per_elf: int, timeout_s: float | None
    ) -> RunResult:
        data = bytearray()
        for start in range(0, len(x), per_elf):
            part = x[start : start + per_elf]
            elf = self.build(graph, kernels, MODE_RUN, part)
            emu = self.emulate(elf, timeout_s=timeout_s)
            self.check_verdict(emu, len(part), elf)
            data += emu.output
        result = decode_records(graph, bytes(data), len(x))
        result.stats = {
            "emulator": "simavr",
            "samples_per_elf": min(per_elf, len(x)),
            "chip": self.chip.name,
            "emulated_mcu": self.mcu,
        }
        return result


def _avr(chip: str, description: str, verify_on: AvrTarget | None = None) -> AvrTarget:
    return AvrTarget(
        name="avr",
        description=description,
        chip=CHIPS[chip],
        toolchain=CrossCompiler("avr-", PACKAGES, (f"-mmcu={chip}", "-DF_CPU=16000000UL", "-Os")),
        link=LinkRecipe(),
        harness="avr/harness.c",
        tools=TOOLS,
        packages=PACKAGES,
        metric="cycles",
        traits=TargetTraits(asm_dialect="avr"),
        mcu=chip,
        verify_on=verify_on,
    )


ATMEGA644P = _avr("atmega644p", "ATmega644P (verification harness of models whose trace needs more than 2 KB)")
AVR = _avr("atmega328p", "ATmega328P (Arduino Uno), avr-gcc -Os, cycle-exact in simavr", verify_on=ATMEGA644P)
TARGETS: list[McuTarget] = [AVR]
