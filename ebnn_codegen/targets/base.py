"""What every target provides, and the decoding shared by all of them.

A target compiles the generated C with a harness, runs it on inputs (natively,
through cffi, or in an emulator) and returns a :class:`RunResult` with the
same contract for every target: ``pred`` (int64, N), ``scores`` (int32, N×K),
``score_scale`` and ``layers`` (int8 ±1 per hidden block, shaped as torch's).
Every harness reports, per sample, the prediction (int32), the scores
(K int32) and the trace (every hidden block's packed output), which
:func:`decode_records` turns into a RunResult.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import bits
from ..errors import CodegenError, ToolError
from ..ir import Model


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
    assert graph.buffers is not None
    return 4 + 4 * graph.num_classes + int(graph.buffers["trace_bytes"])


def decode_traces(graph: Model, traces: np.ndarray) -> list[np.ndarray]:
    """(N, TRACE_BYTES) uint8 -> per hidden block, int8 ±1 (N, C, H, W)."""
    assert graph.buffers is not None
    layers = []
    for block, off in zip(graph.hidden, graph.buffers["trace_offsets"]):
        chunk = traces[:, off : off + block.out_bytes]
        layers.append(bits.unpack_activations(chunk, block.out_shape).reshape(len(traces), *block.torch_shape))
    return layers


def decode_records(graph: Model, data: bytes, n: int, byteorder: str = "<") -> RunResult:
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
    x = np.asarray(x)
    want = tuple(graph.input_shape)
    if x.dtype != np.uint8:
        raise CodegenError(f"input must be uint8 pixels, got dtype {x.dtype}")
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        got = "×".join(map(str, x.shape)) or "a scalar"
        raise CodegenError(f"input must be shaped N×{'×'.join(map(str, want))}, got {got}")
    return np.ascontiguousarray(x)


def cache_dir(kind: str) -> Path:
    root = Path(os.environ.get("EBNN_CACHE", Path.home() / ".cache" / "ebnn-codegen"))
    d = root / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


def digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, dict):
            for k in sorted(p):
                h.update(k.encode())
                h.update(b"\0")
                v = p[k]
                h.update(v.encode() if isinstance(v, str) else bytes(v))
                h.update(b"\1")
        else:
            h.update(str(p).encode())
            h.update(b"\2")
    return h.hexdigest()[:20]


def require_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolError(f"'{tool}' not found", hint=f"install the Debian package {package}")
    return path
