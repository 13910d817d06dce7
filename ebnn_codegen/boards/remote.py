"""``run / verify / bench --port``: the model on a board, through the serial agent.

:func:`connect` opens the port (which resets a USB serial board), waits for its
bootloader to hand over, asks INFO and checks that the board runs *this* model (the
hash of its constants, :func:`ebnn_codegen.boards.firmware.model_hash`); a board with
another model is refused naming both (exit 2).

:func:`run` sends every input with INFER (keeping the trace) and reads every hidden
block back with LAYER: the same :class:`~ebnn_codegen.targets.base.RunResult` as the
other targets, so ``run --port`` writes the same .npz keys and ``verify --port``
compares the same bits. :func:`bench` times inferences with the board's own timer and
puts the emulator's cycle count of the same input beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import costs, targets
from ..errors import CodegenError
from ..ir import Model
from ..targets.base import RunResult, check_inputs, decode_traces
from ..targets.harness import sample_input
from . import table
from .firmware import model_hash
from .serial import Info, Link

DEFAULT_BAUD = 115200
DEFAULT_BOOT_WAIT_S = 2.0
CONNECT_TRIES = 3
CYCLES_PER_MAC_BOUND = 40  # a generous bound of an inference's cycles per binary MAC (for timeouts)


@dataclass
class PortOptions:
    port: str
    baud: int = DEFAULT_BAUD
    boot_wait_s: float = DEFAULT_BOOT_WAIT_S
    timeout_s: float = 1.0
    retries: int = 3


def connect(opts: PortOptions) -> tuple[Link, Info]:
    """Open the port, wait for the board to boot, ask INFO."""
    link = Link.open(opts.port, opts.baud, opts.boot_wait_s, opts.timeout_s, opts.retries)
    try:
        # the first request gets CONNECT_TRIES more tries: a board may still be starting, and
        # qemu's pty backend notices an opened port only within a second (and drops what
        # the guest sends before)
        link.retries = opts.retries + CONNECT_TRIES
        info = link.info()
        link.retries = opts.retries
    except BaseException:
        link.close()
        raise
    return link, info


def check_model(info: Info, graph: Model, kernels: str, where: str, model_path: str = "") -> None:
    """CodegenError (exit 2) unless the board runs ``graph`` with ``kernels``."""
    want = model_hash(graph)
    src = f" from {model_path}" if model_path else ""
    if info.model_hash != want:
        raise CodegenError(
            f"{where}: the board runs model '{info.name}' (hash {info.hash_hex}), not '{graph.name}' "
            f"(hash {want.hex()}){src}",
            hint=f"flash it first: ebnn-gen flash {model_path or 'MODEL'} --board BOARD --port {where}",
        )
    if tuple(info.input_shape) != tuple(graph.input_shape) or info.num_classes != graph.num_classes:
        raise CodegenError(f"{where}: the board's model has other shapes than '{graph.name}' (same hash?)")
    if info.kernels != kernels:
        raise CodegenError(
            f"{where}: the board runs the {info.kernels} kernels of '{graph.name}', not the {kernels} kernels",
            hint=f"use --kernels {info.kernels}, or flash with --kernels {kernels}",
        )


def _infer_extra_s(graph: Model, info: Info) -> float:
    macs = int(costs.report(graph)["totals"]["binary_macs"])
    return 0.5 + CYCLES_PER_MAC_BOUND * macs / max(1, info.f_cpu)


def run(
    graph: Model, x: np.ndarray, opts: PortOptions, kernels: str = "fast", model_path: str = "", log: Any = None
) -> RunResult:
    """Every input through the board: prediction, scores and every hidden block's bits."""
    x = check_inputs(graph, x)
    offsets = list(graph.plan.trace_offsets)
    trace_bytes = graph.plan.trace_bytes
    link, info = connect(opts)
    with link:
        check_model(info, graph, kernels, opts.port, model_path)
        extra = _infer_extra_s(graph, info)
        n, k = len(x), graph.num_classes
        pred = np.zeros(n, np.int64)
        scores = np.zeros((n, k), np.int32)
        traces = np.zeros((n, trace_bytes), np.uint8)
        ticks = np.zeros(n, np.int64)
        t0 = time.perf_counter()
        for i in range(n):
            p, s, t = link.infer(x[i].tobytes(), trace=True, extra_s=extra)
            pred[i], scores[i], ticks[i] = p, s, t
            for b, block in enumerate(graph.hidden):
                data = link.layer(b)
                if len(data) != block.out_bytes:
                    raise CodegenError(
                        f"{opts.port}: block {b} came back with {len(data)} bytes, not {block.out_bytes}"
                    )
                traces[i, offsets[b] : offsets[b] + block.out_bytes] = np.frombuffer(data, np.uint8)
            if log is not None and (i + 1) % 50 == 0:
                log(f"[board] {i + 1}/{n} inputs")
        dt = time.perf_counter() - t0
    result = RunResult(pred, scores, decode_traces(graph, traces), graph.score_scale)
    result.stats = {
        "port": opts.port,
        "chip": info.chip,
        "baud": opts.baud,
        "seconds": round(dt, 3),
        "inputs_per_second": round(n / dt, 2) if dt > 0 else None,
        "mean_cycles": float(ticks.mean() * info.f_cpu / info.timer_hz) if n else None,
        "retries": link.stats.retries,
        "dropped_frames": link.stats.dropped_frames,
    }
    return result


def emulator_for(chip: str) -> Any:
    """The emulator target whose chip is ``chip`` (None if there is none)."""
    seen = set()
    for board in table().values():
        if board.chip == chip and board.target not in seen:
            seen.add(board.target)
            try:
                t = targets.get(board.target)
            except CodegenError:
                continue
            if getattr(getattr(t, "chip", None), "name", None) == chip and hasattr(t, "bench"):
                return t
    return None


def bench(
    graph: Model,
    opts: PortOptions,
    kernels: str = "fast",
    samples: int = 8,
    model_path: str = "",
    emulator: bool = True,
) -> dict[str, Any]:
    """Time inferences with the board's timer; the emulator's cycles of the same input beside."""
    link, info = connect(opts)
    with link:
        check_model(info, graph, kernels, opts.port, model_path)
        extra = _infer_extra_s(graph, info)
        x0 = sample_input(graph)[0].tobytes()  # the input the emulators' bench times
        ticks = [link.infer(x0, trace=False, extra_s=extra)[2] for _ in range(max(1, samples))]
    per_tick = info.f_cpu / info.timer_hz
    # the runs start at random phases of the timer's prescaler: their mean resolves
    # fractions of a tick (dithering); one run alone is within one tick
    t = float(np.mean(ticks))
    cycles = int(round(t * per_tick))
    macs = int(costs.report(graph)["totals"]["binary_macs"])
    out: dict[str, Any] = {
        "target": "board",
        "port": opts.port,
        "chip": info.chip,
        "kernels": kernels,
        "cycles": cycles,
        "binary_macs": macs,
        "cycles_per_mac": round(cycles / macs, 3) if macs else None,
        "clock_hz": info.f_cpu,
        "ms_at_clock": round(1000.0 * cycles / info.f_cpu, 4),
        "us_per_inference": round(1e6 * t / info.timer_hz, 2),
        "timer_ticks_mean": round(t, 3),
        "timer_hz": info.timer_hz,
        "timer_resolution_cycles": int(per_tick),
        "runs": len(ticks),
        "ticks_min": min(ticks),
        "ticks_max": max(ticks),
        "measured_on": "board",
    }
    emu = emulator_for(info.chip) if emulator else None
    if emu is not None:
        e = emu.bench(graph, kernels)
        out["emulator"] = {
            "target": e["target"],
            "cycles": e["cycles"],
            "ms_at_clock": e["ms_at_clock"],
            "difference_cycles": cycles - int(e["cycles"]),
        }
        for key in ("flash_bytes", "sram_bytes", "peak_stack_bytes"):
            out[key] = e[key]
    return out
