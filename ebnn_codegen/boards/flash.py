"""``ebnn-gen flash``: fit check, agent firmware, upload, and a check that it answers.

1. the fit check of the board's target (the same ``check_fits`` every target command
   uses), then the whole image (model + agent) against the board's application flash
   and RAM: a model that does not fit is refused with the numbers (exit 2);
2. the agent firmware (:mod:`ebnn_codegen.boards.firmware`);
3. the upload with the board's flash tool: avrdude ``-c arduino`` (optiboot: Uno, Nano)
   or ``-c wiring`` (stk500v2: Mega 2560), write and read-back verify; a bootloader that
   does not answer is a tool failure (exit 3) with avrdude's own words;
4. the board is opened like ``--port`` does and must answer INFO with this model's hash.

Flash tools are looked up by the board table's ``flash_tool``: ``FLASH_TOOLS`` maps
the name to a function ``(board, firmware, port, upload_baud, attempts) -> None``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CodegenError, ToolError
from ..ir import Model
from ..targets.base import Target
from . import Board
from .firmware import AgentFirmware, agent_cost, build_agent, check_image_fits
from .remote import PortOptions, check_model, connect

UPLOAD_TIMEOUT_S = 180.0


def fit_target(board: Board) -> Target:
    """The target whose ``check_fits`` and ``size`` apply to ``board``'s chip: the board's
    target, or, for another chip of the AVR family (the Mega's ATmega2560), the AVR target
    with that chip's memories (a :class:`~ebnn_codegen.targets.chips.Chip` made from the
    board's data: flash minus the boot section and 2 KB for the agent, RAM minus 384 B)."""
    from dataclasses import replace

    from .. import targets
    from ..targets.avr import AVR, PACKAGES
    from ..targets.chips import Chip
    from ..targets.toolchain import CrossCompiler

    t = targets.get(board.target)
    if t.chip is not None and t.chip.name == board.chip:
        return t
    if board.target != "avr":
        raise CodegenError(f"board '{board.name}': its chip {board.chip} is not the chip of target {board.target}")
    chip = Chip(
        board.chip,
        board.flash_bytes,
        board.sram_bytes,
        board.f_cpu,
        board.flash_bytes - board.app_flash_bytes,
        2048,
        384,
        f"budget: flash minus the bootloader and 2 KB for the application; RAM minus 384 B ({board.name})",
    )
    flags = (f"-mmcu={board.mcu}", f"-DF_CPU={board.f_cpu}UL", "-Os")
    return replace(AVR, chip=chip, mcu=board.mcu, toolchain=CrossCompiler("avr-", PACKAGES, flags), verify_on=None)


def _check_port(port: str) -> None:
    if "://" not in port and not Path(port).exists():
        raise CodegenError(
            f"{port}: no such serial port", hint="is the board plugged in? (ls /dev/ttyACM* /dev/ttyUSB*)"
        )


def _avrdude(board: Board, fw: AgentFirmware, port: str, upload_baud: int, attempts: int | None = None) -> None:
    exe = shutil.which("avrdude")
    if exe is None:
        raise ToolError("'avrdude' not found", hint="install the Debian package avrdude")
    cmd = [
        exe,
        "-c",
        board.programmer,
        "-p",
        board.avrdude_part or board.mcu,
        "-P",
        port,
        "-b",
        str(upload_baud),
        "-D",
        "-U",
        f"flash:w:{fw.hex}:i",
    ]
    if attempts is not None and board.programmer == "arduino":
        cmd[1:1] = ["-x", f"attempts={attempts}"]  # tries to reach the bootloader (avrdude's default: 10)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=UPLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ToolError(f"avrdude did not finish within {UPLOAD_TIMEOUT_S:g} s on {port}") from None
    if proc.returncode != 0:
        text = (proc.stderr + proc.stdout).strip()
        lines = [ln.strip() for ln in text.splitlines() if "TIOCMGET" not in ln and ln.strip()]
        detail = next((ln for ln in lines if "not responding" in ln or "not in sync" in ln), lines[-1] if lines else "")
        if "not responding" in text or "not in sync" in text or "getsync" in text:
            raise ToolError(
                f"avrdude: the bootloader on {port} does not answer ({detail}); is it the board's port, "
                f"and is it a {board.description}?"
            )
        raise ToolError(f"avrdude failed (exit {proc.returncode}) on {port}: {detail}")


def _esptool(board: Board, fw: AgentFirmware, port: str, upload_baud: int, attempts: int | None = None) -> None:
    raise ToolError(f"board '{board.name}': flashing with esptool needs the xtensa-lx106 target's image builder")


FLASH_TOOLS: dict[str, Callable[[Board, AgentFirmware, str, int, int | None], None]] = {
    "avrdude": _avrdude,
    "esptool": _esptool,
}


def prepare(graph: Model, board: Board, kernels: str = "fast", baud: int | None = None) -> dict[str, Any]:
    """Fit checks and the firmware, without touching a port. Returns the firmware and
    the numbers (model, agent, image)."""
    target = fit_target(board)
    target.check_fits(graph, kernels)
    size = target.size(graph, kernels)
    fw = build_agent(graph, board, kernels, baud)
    fits = check_image_fits(fw, board, int(size["peak_stack_bytes"]))
    return {
        "firmware": fw,
        "model_flash_bytes": size["flash_bytes"],
        "model_sram_bytes": size["sram_bytes"],
        "peak_stack_bytes": size["peak_stack_bytes"],
        **agent_cost(fw, size),
        "sram_needed_bytes": fits["sram_needed_bytes"],
        "app_flash_bytes": board.app_flash_bytes,
        "board_sram_bytes": board.sram_bytes,
    }


def flash(
    graph: Model,
    board: Board,
    port: str,
    kernels: str = "fast",
    baud: int | None = None,
    upload_baud: int | None = None,
    check: bool = True,
    attempts: int | None = None,
    model_path: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build, upload and check; returns what was done and measured (``upload_s`` ...)."""
    say = log or (lambda _msg: None)
    _check_port(port)
    if board.flash_tool == "none":
        raise CodegenError(
            f"board '{board.name}' is not flashed: it runs in an emulator that loads the firmware",
            hint=f"ebnn-gen board simulate --board {board.name} --model MODEL",
        )
    tool = FLASH_TOOLS.get(board.flash_tool)
    if tool is None:
        raise CodegenError(f"board '{board.name}': unknown flash tool {board.flash_tool!r}")
    say(f"[1/3] firmware: model '{graph.name}' + serial agent for the {board.name}")
    facts = prepare(graph, board, kernels, baud)
    fw: AgentFirmware = facts.pop("firmware")
    say(f"[2/3] upload ({fw.flash_bytes} B) with {board.flash_tool} on {port}")
    t0 = time.perf_counter()
    tool(board, fw, port, upload_baud or board.upload_baud, attempts)
    facts["upload_s"] = round(time.perf_counter() - t0, 2)
    facts.update(board=board.name, port=port, model=graph.name, model_hash=fw.info.hash_hex, hex=str(fw.hex))
    if check:
        say("[3/3] check: the board answers INFO with this model")
        link, info = connect(PortOptions(port, fw.info.baud, board.boot_wait_s))
        with link:
            check_model(info, graph, kernels, port, model_path)
        facts["info"] = info.to_dict()
    return facts
