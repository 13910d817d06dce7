"""The agent firmware of a model: the generated model + firmware/agent/ebnn_agent.c.

:func:`build_agent` cross-compiles it with the AVR target's compiler and flags (the
model's objects come from the target's own cache), links it, and returns the ELF,
the Intel hex that avrdude uploads, and the image's flash and RAM. The agent's own
cost is measured as the image minus the model's symbols (:func:`agent_cost`).

:func:`model_hash` is the identity the host checks before it trusts a board's answers:
8 bytes of SHA-256 over the model's constants as the compiler lowered them (shapes,
packed weights, thresholds, exit affine, score scale), not over the checkpoint file,
so re-saving a checkpoint keeps it and retraining changes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import codegen, targets
from ..cflags import STRICT_CFLAGS
from ..errors import ResourceError, ToolError
from ..ir import Model, constants_sha256
from ..resources import resource_dir
from ..targets.toolchain import cache_dir, digest, require_tool
from . import Board
from .serial import Info, encode_info

AGENT_SOURCE = "agent/ebnn_agent.c"
TIMER_PRESCALER = 64
IDLE_MS = 50
STACK_MARGIN = 64  # bytes of stack the agent's own frames need beside the model's peak


def model_hash(graph: Model) -> bytes:
    """8 bytes that identify the model's constants (:func:`ebnn_codegen.ir.constants_sha256`)."""
    return bytes.fromhex(constants_sha256(graph))[:8]


def uart_setting(f_cpu: int, baud: int) -> tuple[int, int, int]:
    """(UBRR, U2X, actual baud) as the Arduino core picks them: double speed first."""
    for u2x, div in ((1, 8), (0, 16)):
        ubrr = round(f_cpu / (div * baud)) - 1
        if 0 <= ubrr <= 4095:
            actual = f_cpu // (div * (ubrr + 1))
            if abs(actual - baud) / baud <= 0.035:
                return ubrr, u2x, actual
    raise ResourceError(f"{baud} baud cannot be made from a {f_cpu} Hz clock within 3.5 %")


def agent_port(board: Board) -> str:
    """The agent's port for the board: "avr" (USART0, Timer1 / 64) or "cmsdk" (ARM MPS2)."""
    return str(board.extra.get("agent_port", "avr"))


def timer_prescaler(board: Board) -> int:
    return TIMER_PRESCALER if agent_port(board) == "avr" else 1


def info_for(graph: Model, board: Board, kernels: str, baud: int) -> Info:
    return Info(
        model_hash=model_hash(graph),
        input_shape=tuple(graph.input_shape),  # type: ignore[arg-type]
        num_classes=graph.num_classes,
        score_scale_log2=graph.scale_log2,
        kernels=kernels,
        block_bytes=tuple(b.out_bytes for b in graph.hidden),
        f_cpu=board.f_cpu,
        timer_hz=board.f_cpu // timer_prescaler(board),
        baud=baud,
        name=graph.name,
        chip=board.chip,
    )


def agent_files(graph: Model, board: Board, kernels: str, baud: int) -> dict[str, str]:
    """ebnn_agent.h for ``graph`` on ``board`` (plus the model's own files)."""
    prescaler = timer_prescaler(board)
    timer_hz = board.f_cpu // prescaler
    if agent_port(board) == "avr":
        ubrr, u2x, actual = uart_setting(board.f_cpu, baud)
        idle_ticks = min(65000, timer_hz * IDLE_MS // 1000)
    else:  # CMSDK UART: BAUDDIV = clock / baud
        ubrr, u2x = board.f_cpu // baud, 0
        actual, idle_ticks = board.f_cpu // ubrr, timer_hz * IDLE_MS // 1000
    info = [f"0x{v:02x}" for v in encode_info(info_for(graph, board, kernels, baud))]
    ctx = codegen.model_context(graph, kernels, {"target": board.target, "board": board.name})
    ctx.update(
        baud=baud,
        f_cpu=board.f_cpu,
        actual_baud=actual,
        ubrr=ubrr,
        u2x=u2x,
        prescaler=prescaler,
        idle_ms=IDLE_MS,
        idle_ticks=idle_ticks,
        trace_offsets=[str(v) for v in graph.plan.trace_offsets],
        block_bytes=[str(b.out_bytes) for b in graph.hidden],
        info=info,
        info_bytes=len(info),
    )
    return {"ebnn_agent.h": codegen.render_template("agent.h.j2", ctx)}


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{(proc.stderr + proc.stdout)[-3000:]}"
        )
    return proc.stdout


@dataclass
class AgentFirmware:
    elf: Path
    hex: Path
    flash_bytes: int  # whole image: model + agent + libc
    sram_bytes: int  # static: .data + .bss
    info: Info


def avr_cflags(board: Board) -> list[str]:
    return [f"-mmcu={board.mcu}", f"-DF_CPU={board.f_cpu}UL", "-Os"]


def _toolchain(board: Board) -> tuple[str, str, list[str], list[str], list[Path]]:
    """(compiler, size tool, compile flags, link flags, start-up sources) for the board."""
    fw = resource_dir("firmware")
    if board.target == "avr":
        cc = require_tool("avr-gcc", "gcc-avr avr-libc")
        return cc, require_tool("avr-size", "binutils-avr"), avr_cflags(board), avr_cflags(board), []
    from .. import targets
    from ..targets.mcu import McuTarget

    t = targets.get(board.target)
    if agent_port(board) != "cmsdk" or not isinstance(t, McuTarget):
        raise ToolError(f"board '{board.name}': no agent port for target {board.target}")
    tc = t.toolchain
    cc = require_tool(tc.cc, tc.packages)
    flags = [*tc.cflags, "-DA_PORT_CMSDK"]
    startup = [fw / s for s in t.link.sources]
    return cc, tc.tool("size"), flags, [*tc.cflags, *t.link.resolve(fw)], startup


def build_agent(graph: Model, board: Board, kernels: str = "fast", baud: int | None = None) -> AgentFirmware:
    """Compile and link model + agent for ``board`` (cached by the hash of every input)."""
    baud = baud or board.agent_baud
    cc, size, cflags, lflags, startup = _toolchain(board)
    fw = resource_dir("firmware")
    traits = targets.get(board.target).traits  # the kernels the emulated target verifies
    files = codegen.render_model(graph, kernels, {"target": board.target}, traits)
    files.update(agent_files(graph, board, kernels, baud))
    files["ebnn_agent.c"] = (fw / AGENT_SOURCE).read_text()
    flags = [*cflags, "-ffunction-sections", "-fdata-sections", *STRICT_CFLAGS]
    version = subprocess.run([cc, "-dumpversion"], capture_output=True, text=True).stdout.strip()
    startup_texts = {p.name: p.read_text() for p in startup}
    final = cache_dir("agent") / digest(files, startup_texts, flags, lflags, version)
    if not (final / "agent.elf").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
        try:
            for fname, text in files.items():
                (tmp / fname).write_text(text)
            sources = [tmp / f for f in files if f.endswith(".c")] + startup
            objs = []
            for i, src in enumerate(sources):
                obj = tmp / f"{i}_{src.stem}.o"
                _run([cc, *flags, f"-I{tmp}", "-c", str(src), "-o", str(obj)], f"{Path(cc).name} ({src.name})")
                objs.append(str(obj))
            elf = tmp / "agent.elf"
            _run([cc, *lflags, "-Wl,--gc-sections", *objs, "-o", str(elf)], "linking the agent firmware")
            if board.target == "avr":
                objcopy = require_tool("avr-objcopy", "binutils-avr")
                _run([objcopy, "-O", "ihex", "-R", ".eeprom", str(elf), str(tmp / "agent.hex")], "avr-objcopy")
            try:
                os.replace(tmp, final)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    out = _run([size, "-B", str(final / "agent.elf")], Path(size).name)
    text_b, data_b, bss_b = (int(v) for v in out.splitlines()[1].split()[:3])
    return AgentFirmware(
        final / "agent.elf", final / "agent.hex", text_b + data_b, data_b + bss_b, info_for(graph, board, kernels, baud)
    )


def agent_cost(image: AgentFirmware, model_size: dict[str, Any]) -> dict[str, int]:
    """The agent's own flash and static RAM: the image minus the model's symbols (the
    model as the AVR target's size() measures it) and minus the input, trace and scores
    buffers the agent holds for the model."""
    return {
        "image_flash_bytes": image.flash_bytes,
        "image_sram_bytes": image.sram_bytes,
        "agent_flash_bytes": image.flash_bytes - int(model_size["flash_bytes"]),
        "agent_sram_bytes": image.sram_bytes - int(model_size["sram_bytes"]),
    }


def check_image_fits(image: AgentFirmware, board: Board, peak_stack: int) -> dict[str, int]:
    """ResourceError (exit 2, with the numbers) unless model + agent fit the board."""
    ram = image.sram_bytes + peak_stack + STACK_MARGIN
    problems = []
    if image.flash_bytes > board.app_flash_bytes:
        problems.append(f"flash {image.flash_bytes} B > {board.app_flash_bytes} B for the application")
    if ram > board.sram_bytes:
        problems.append(
            f"RAM {ram} B (static {image.sram_bytes} B + model stack {peak_stack} B + agent stack "
            f"{STACK_MARGIN} B) > {board.sram_bytes} B"
        )
    if problems:
        raise ResourceError(
            f"the firmware of model '{image.info.name}' with the serial agent does not fit the {board.name} "
            f"({board.chip}): {'; '.join(problems)}",
            hint="use a smaller model (see `ebnn-gen report MODEL --target avr`)",
        )
    return {"flash_bytes": image.flash_bytes, "sram_needed_bytes": ram}
