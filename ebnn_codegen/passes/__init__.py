"""Compiler passes over the IR.

Rules every pass follows (the driver relies on them):

* A pass is a class with a verb-phrase name and ``apply(model) -> (model, changed)``.
* ``apply`` may modify the model it is given (the driver deep-copies the IR once
  before the pipeline runs, so a caller's IR is never changed).
* ``changed`` is True when the pass rewrote something; the driver re-applies a
  pass until it reports no change, so a pass must be idempotent: applied to its
  own output it changes nothing.
* A pass that cannot rewrite exactly raises a :class:`~ebnn_codegen.errors.CodegenError`
  naming the block and channel; it never approximates silently.

The pipeline is a plain ordered list, :data:`PIPELINE`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Protocol

from ..ir import Model
from .fold_exit import FoldExitBatchNormIntoFixedPoint
from .fold_threshold import FoldBatchNormIntoThreshold
from .pack_weights import PackBinaryWeights
from .plan_buffers import PlanBuffers


class Pass(Protocol):
    def apply(self, model: Model) -> tuple[Model, bool]: ...


PIPELINE: tuple[Pass, ...] = (
    FoldBatchNormIntoThreshold(),
    FoldExitBatchNormIntoFixedPoint(),
    PackBinaryWeights(),
    PlanBuffers(),
)

MAX_ROUNDS = 16


def run_passes(
    model: Model,
    passes: Sequence[Pass] = PIPELINE,
    after_pass: Callable[[Pass, Model], None] | None = None,
) -> Model:
    """Deep-copy ``model`` and apply each pass until it reports no change."""
    model = copy.deepcopy(model)
    for p in passes:
        for _ in range(MAX_ROUNDS):
            model, changed = p.apply(model)
            if not changed:
                break
        else:  # pragma: no cover - a pass that never settles is a bug
            raise RuntimeError(f"{type(p).__name__} did not reach a fixed point")
        if after_pass is not None:
            after_pass(p, model)
    return model


__all__ = [
    "PIPELINE",
    "FoldBatchNormIntoThreshold",
    "FoldExitBatchNormIntoFixedPoint",
    "PackBinaryWeights",
    "PlanBuffers",
    "run_passes",
]
