"""Long runs in batches, with a progress bar (:mod:`ebnn_codegen.progress`).

``verify`` and ``run`` on many inputs, and the IR reference on them, go through here so
that the user sees a rate and an estimate; the results are the concatenation of the
batches' results, identical to one call on all inputs (every sample is independent).

Batch sizes: the host build runs 4096 inputs per call (it is fast; one call per batch
costs nothing measurable), the emulated targets 256 (each batch is one or more firmware
images with the inputs in flash, as the target splits them), the reference interpreter
its own chunk size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import progress, reference
from .ir import Model
from .targets.base import RunResult

HOST_BATCH = 4096
EMULATOR_BATCH = 256


def _concat_layers(parts: list[Any], n_layers: int) -> list[np.ndarray]:
    return [np.concatenate([p.layers[i] for p in parts]) for i in range(n_layers)]


def run_target(target: Any, graph: Model, x: np.ndarray, kernels: str, name: str) -> RunResult:
    """``target.run(graph, x, kernels=...)`` in batches, with a bar (``name``: the target's name)."""
    size = HOST_BATCH if name == "host" else EMULATOR_BATCH
    if len(x) <= size:
        with progress.bar(total=len(x), desc=f"run on {name}", unit="sample") as bar:
            result: RunResult = target.run(graph, x, kernels=kernels)
            bar.update(len(x))
        return result
    parts: list[RunResult] = []
    with progress.bar(total=len(x), desc=f"run on {name}", unit="sample") as bar:
        for i in range(0, len(x), size):
            parts.append(target.run(graph, x[i : i + size], kernels=kernels))
            bar.update(len(parts[-1].pred))
    stats = dict(parts[0].stats)
    stats["batches"] = len(parts)
    return RunResult(
        pred=np.concatenate([p.pred for p in parts]),
        scores=np.concatenate([p.scores for p in parts]),
        layers=_concat_layers(parts, len(graph.hidden)),
        score_scale=parts[0].score_scale,
        stats=stats,
    )


def run_reference(graph: Model, x: np.ndarray) -> reference.Result:
    """:func:`ebnn_codegen.reference.run` in chunks, with a bar."""
    size = reference.CHUNK
    parts = []
    with progress.bar(total=len(x), desc="IR reference", unit="sample") as bar:
        for i in range(0, max(len(x), 1), size):
            parts.append(reference.run(graph, x[i : i + size]))
            bar.update(len(parts[-1].pred))
    if len(parts) == 1:
        return parts[0]
    return reference.Result(
        pred=np.concatenate([p.pred for p in parts]),
        scores=np.concatenate([p.scores for p in parts]),
        layers=_concat_layers(parts, len(graph.hidden)),
        accumulators=np.concatenate([p.accumulators for p in parts]),
    )


__all__ = ["EMULATOR_BATCH", "HOST_BATCH", "run_reference", "run_target"]
