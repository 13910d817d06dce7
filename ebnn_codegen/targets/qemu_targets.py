"""The qemu targets: Cortex-M0/M3/M4 (qemu-system-arm) and rv32imc (qemu-system-riscv32).

Each is a :class:`QemuTarget` value: a chip (:mod:`.chips`), a cross compiler, a link
recipe (start-up code, linker script, libc specs) and a :class:`~.qemu.QemuMachine`.  Inputs
and records go through host files (semihosting), one ELF per model for any number of
inputs.  Adding a qemu chip: a chip entry, a link recipe and, if the harness differs, a
harness main in firmware/; subclass :class:`QemuTarget` only to change how exit codes read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..codegen.traits import TargetTraits
from ..errors import ToolError
from ..ir import Model
from .base import Emulation, RunResult, check_inputs, decode_records, record_bytes
from .chips import CHIPS
from .elfsize import addresses_of
from .fit import StackWindowError
from .mcu import DEFAULT_TIMEOUT_S, MODE_RUN, LinkRecipe, McuTarget
from .qemu import QemuMachine, stack_used, stack_window
from .toolchain import CrossCompiler

ARM_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
ARM_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size", "qemu-system-arm", "cc")
RISCV_PACKAGES = "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc"
RISCV_TOOLS = ("riscv64-unknown-elf-gcc", "riscv64-unknown-elf-nm", "riscv64-unknown-elf-size", "qemu-system-riscv32")
RISCV_FLASH = "-Wl,--defsym=__flash=0x80000000,--defsym=__flash_size=0x400000"
RISCV_RAM = "-Wl,--defsym=__ram=0x80400000,--defsym=__ram_size=0x400000"
ARM_EXCEPTIONS = {3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault"}


@dataclass
class QemuTarget(McuTarget):
    """A chip emulated by qemu, counting executed instructions."""

    machine: QemuMachine = QemuMachine("", "")

    def emulate(
        self,
        elf: Path,
        inputs: bytes | None = None,
        timeout_s: float | None = None,
        regions: bool = False,
        max_cycles: int | None = None,
    ) -> Emulation:
        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        bench_range = None
        if regions:
            syms = addresses_of(self.toolchain, elf)
            bench_range = (syms["h_bench_start"], syms["h_bench_stop"])
        return self.machine.emulate(elf, self.packages, self.name, inputs, timeout_s, bench_range)

    def explain(self, rc: int) -> str:
        if self.prefix.startswith("arm") and 128 < rc < 128 + 16:
            return f"exit {rc}: {ARM_EXCEPTIONS.get(rc - 128, 'exception')} {rc - 128}"
        if rc == 255 and self.prefix.startswith("riscv"):
            return "exit 255: trap"
        return f"exit code {rc}"

    def stack_of(self, emu: Emulation) -> int:
        used = stack_used(emu.text)
        if used is None:
            raise ToolError(f"{self.name}: the size harness printed no stack measurement")
        if used < 0:
            window = stack_window(emu.text)
            msg = f"{self.name}: the inference used more stack than the painted window"
            if window is None:
                raise ToolError(msg)
            raise StackWindowError(f"{msg} ({window:,} B: the RAM the chip had left)", window)
        return used

    def bench_notes(self) -> dict[str, str]:
        return {"ms_at_clock_assumes": "one instruction per cycle (qemu counts instructions, not cycles)"}

    def run(self, graph: Model, x: np.ndarray, kernels: str = "fast", timeout_s: float | None = None) -> RunResult:
        """Inputs and records go through host files (semihosting), one ELF per model."""
        x = check_inputs(graph, x)
        self.require()
        elf = self.build(graph, kernels, MODE_RUN)
        emu = self.emulate(elf, inputs=x.tobytes(), timeout_s=timeout_s)
        self.check_verdict(emu, len(x), elf)
        if len(emu.output) != len(x) * record_bytes(graph):
            raise ToolError(f"{self.name}: the harness wrote {len(emu.output)} bytes, expected {len(x)} records")
        result = decode_records(graph, emu.output, len(x))
        result.stats = {"emulator": f"{self.machine.binary} -M {self.machine.machine}", "chip": self.chip.name}
        return result


#: What the generated kernels may assume (codegen.traits): no AVR assembly; a compare with a
#: shifted immediate is cheap, except on Cortex-M0 (ARMv6-M: 8 low registers, no shifted operands).
SHIFTING = TargetTraits(asm_dialect=None, barrel_shifter=True)
ARMV6M = TargetTraits(asm_dialect=None, barrel_shifter=False)


def cortex_m(
    name: str, description: str, chip: str, cpu_flags: tuple[str, ...], machine: str, script: str
) -> QemuTarget:
    return QemuTarget(
        name=name,
        description=description,
        chip=CHIPS[chip],
        toolchain=CrossCompiler("arm-none-eabi-", ARM_PACKAGES, (*cpu_flags, "-O2")),
        link=LinkRecipe(
            flags=("--specs=nano.specs", "--specs=rdimon.specs", "-L{fw}/cortex-m", f"-T{{fw}}/{script}"),
            sources=("cortex-m/startup.c",),
            scripts=("cortex-m/mps2.ld", "cortex-m/microbit.ld", "cortex-m/cortex_m_sections.ld"),
        ),
        harness="qemu/harness.c",
        tools=ARM_TOOLS,
        packages=ARM_PACKAGES,
        metric="instructions",
        traits=ARMV6M if "-mcpu=cortex-m0" in cpu_flags else SHIFTING,
        machine=QemuMachine("qemu-system-arm", machine),
    )


RV32IMC = QemuTarget(
    name="rv32imc",
    description="RISC-V rv32imc (ESP32-C3 class), picolibc, instructions in qemu-system-riscv32 -M virt",
    chip=CHIPS["esp32c3"],
    toolchain=CrossCompiler(
        "riscv64-unknown-elf-", RISCV_PACKAGES, ("-march=rv32imc", "-mabi=ilp32", "-O2", "--specs=picolibc.specs")
    ),
    link=LinkRecipe(flags=("--oslib=semihost", "--crt0=semihost", RISCV_FLASH, RISCV_RAM)),
    harness="qemu/harness.c",
    tools=(*RISCV_TOOLS, "cc"),
    packages=RISCV_PACKAGES,
    metric="instructions",
    traits=SHIFTING,
    machine=QemuMachine("qemu-system-riscv32", "virt", ("-bios", "none")),
)

TARGETS: list[McuTarget] = [
    cortex_m(
        "cortex-m0",
        "Cortex-M0 (nRF51822, micro:bit), arm-none-eabi-gcc -O2, instructions in qemu -M microbit",
        "nrf51822",
        ("-mcpu=cortex-m0", "-mthumb"),
        "microbit",
        "cortex-m/microbit.ld",
    ),
    cortex_m(
        "cortex-m3",
        "Cortex-M3 (STM32F103C8 class), arm-none-eabi-gcc -O2, instructions in qemu -M mps2-an385",
        "stm32f103c8",
        ("-mcpu=cortex-m3", "-mthumb"),
        "mps2-an385",
        "cortex-m/mps2.ld",
    ),
    cortex_m(
        "cortex-m4",
        "Cortex-M4F (STM32F411CE class), hard float, instructions in qemu -M mps2-an386",
        "stm32f411ce",
        ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
        "mps2-an386",
        "cortex-m/mps2.ld",
    ),
    RV32IMC,
]
