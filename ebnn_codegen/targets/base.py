"""What every target provides (:class:`Target`), and the decoding shared by all of them.

A target compiles the generated C with a harness, runs it on inputs (natively,
through cffi, or in an emulator) and returns a :class:`RunResult` with the
same contract for every target: ``pred`` (int64, N), ``scores`` (int32, N×K),
``score_scale`` and ``layers`` (int8 ±1 per hidden block, shaped as torch's).
Every harness reports, per sample, the prediction (int32), the scores
(K int32) and the trace (every hidden block's packed output), which
:func:`decode_records` turns into a RunResult.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from .. import bits
from ..codegen.traits import TargetTraits
from ..errors import CodegenError, ToolError
from ..ir import Model
from .chips import Chip
from .fit import FitReport


@dataclass
class RunResult:
    pred: np.ndarray
    scores: np.ndarray
    layers: list[np.ndarray]
    score_scale: float
    stats: dict[str, Any] = field(default_factory=dict)  # cycles, instructions, sizes ... per target

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "pred": self.pred.astype(np.int64),
            "scores": self.scores.astype(np.int32),
            "score_scale": np.array(self.score_scale, dtype=np.float64),
        }
        for i, layer in enumerate(self.layers):
            out[f"layer_{i}"] = layer.astype(np.int8)
        return out


def record_bytes(graph: Model) -> int:
    return 4 + 4 * graph.num_classes + graph.plan.trace_bytes


def decode_traces(graph: Model, traces: np.ndarray) -> list[np.ndarray]:
    """(N, TRACE_BYTES) uint8 -> per hidden block, int8 ±1 (N, C, H, W)."""
    layers = []
    for block, off in zip(graph.hidden, graph.plan.trace_offsets):
        chunk = traces[:, off : off + block.out_bytes]
        layers.append(bits.unpack_activations(chunk, block.out_shape).reshape(len(traces), *block.torch_shape))
    return layers


def decode_records(graph: Model, data: bytes, n: int, byteorder: Literal["<", ">"] = "<") -> RunResult:
    """Parse ``n`` harness records (pred int32, scores int32[K], trace bytes)."""
    size = record_bytes(graph)
    if len(data) != n * size:
        raise ToolError(f"harness returned {len(data)} bytes, expected {n} records of {size} bytes")
    k = graph.num_classes
    raw = np.frombuffer(data, np.uint8).reshape(n, size)
    i32 = np.dtype(np.int32).newbyteorder(byteorder)
    pred = raw[:, :4].copy().view(i32).reshape(n).astype(np.int64)
    scores = raw[:, 4 : 4 + 4 * k].copy().view(i32).reshape(n, k).astype(np.int32)
    traces = raw[:, 4 + 4 * k :]
    return RunResult(pred, scores, decode_traces(graph, traces), graph.score_scale)


def check_inputs(graph: Model, x: np.ndarray) -> np.ndarray:
    """``x`` as a contiguous uint8 N×C×H×W array of the model's input shape (N may be 0)."""
    x = np.asarray(x)
    want = tuple(graph.input_shape)
    if x.dtype != np.uint8:
        raise CodegenError(f"input must be uint8 pixels, got dtype {x.dtype}")
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        got = "×".join(map(str, x.shape)) or "a scalar"
        raise CodegenError(f"input must be shaped N×{'×'.join(map(str, want))}, got {got}")
    return np.ascontiguousarray(x)


def random_inputs(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """Random uint8 inputs, with an all-0 and an all-255 image first (the range's extremes)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    if n >= 1:
        x[0] = 0
    if n >= 2:
        x[1] = 255
    return x


@dataclass
class Emulation:
    """What one emulator run returned (the drivers in :mod:`.simavr` and :mod:`.qemu` fill it)."""

    returncode: int
    output: bytes  # the binary channel: UART0 on simavr, the file ebnn_out.bin on qemu
    text: str  # the text channel (stderr on simavr, stdout + stderr on qemu) and the plugin log
    regions: list[tuple[int, int | None]] = field(default_factory=list)  # (count, stack bytes or None)


def timeout_error(target: str, emulator: str, timeout_s: float) -> ToolError:
    return ToolError(
        f"{target}: {emulator} timed out after {timeout_s:g} s (the firmware hangs, or needs more time: "
        f"set EBNN_EMULATOR_TIMEOUT)"
    )


@runtime_checkable
class Target(Protocol):
    """A place where the generated C runs: the host, an emulated chip (later: a board on a port).

    Every target is registered once (:mod:`ebnn_codegen.targets`) and offers:

    * ``run(graph, x, kernels)`` -- a :class:`RunResult` for uint8 inputs N×C×H×W; its
      ``stats["chip"]`` names the chip that ran the code (``stats["chip_note"]`` says why
      when it is not the target's own chip);
    * ``check_fits(graph, kernels, measure)`` -- a :class:`~.fit.FitReport`, or FitError
      (exit 2) with the numbers;
    * ``size(graph, kernels)`` -- flash, static RAM and peak stack of the model, measured;
    * ``bench(graph, kernels, samples)`` -- the cost of one inference (cycles, instructions
      or time) as a JSON-ready dict;
    * ``available()`` -- whether its tools are installed (without raising).

    ``traits`` say what the generated kernels may assume of the chip (``export --target`` renders
    with them, and so does every build of the target: what is verified is what ships); the host's
    are the portable ones.  ``chip`` is None for the host.  ``serial`` is None for targets without a board behind
    them; a board target sets it to an object of the :class:`SerialOps` protocol.
    """

    name: str
    description: str
    traits: TargetTraits  # what the generated kernels may assume of its chip (codegen.traits)

    @property
    def chip(self) -> Chip | None: ...

    @property
    def serial(self) -> SerialOps | None: ...

    def available(self) -> bool: ...

    def run(self, graph: Model, x: np.ndarray, kernels: str = "fast", timeout_s: float | None = None) -> RunResult: ...

    def check_fits(self, graph: Model, kernels: str = "fast", measure: bool | None = None) -> FitReport: ...

    def size(self, graph: Model, kernels: str = "fast") -> dict[str, Any]: ...

    def bench(self, graph: Model, kernels: str = "fast", samples: int = 256) -> dict[str, Any]: ...


@runtime_checkable
class SerialOps(Protocol):
    """The operations of a real board on a serial port (room for the boards work; not implemented here).

    ``flash`` writes a firmware image to the board on ``port``; ``run`` streams inputs to the
    board's agent and decodes the same records as the emulators (a :class:`RunResult`).
    """

    def flash(self, image: Path, port: str) -> None: ...

    def run(self, graph: Model, x: np.ndarray, port: str, kernels: str = "fast") -> RunResult: ...
