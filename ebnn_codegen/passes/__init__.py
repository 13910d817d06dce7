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

The pipeline is one plain ordered list of named stages, :data:`STAGES` (``step_fold``,
``step_pack``, ``step_plan``; the compiler driver prints and saves the IR per stage);
:data:`PIPELINE` is the same passes flattened.  After every pass the driver calls its
``after_pass`` hook, by default :func:`ebnn_codegen.ir_check.validate`, so a pass that breaks
an invariant of the IR fails where it happens.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..ir import Model
from ..ir_check import validate
from .fold_exit import FoldExitBatchNormIntoFixedPoint
from .fold_threshold import FoldBatchNormIntoThreshold
from .pack_weights import PackBinaryWeights
from .plan_buffers import PlanBuffers


class Pass(Protocol):
    def apply(self, model: Model) -> tuple[Model, bool]: ...


@dataclass(frozen=True)
class Stage:
    """A named group of passes (``step_<name>``), run in order."""

    name: str
    passes: tuple[Pass, ...]


STAGES: tuple[Stage, ...] = (
    Stage("step_fold", (FoldBatchNormIntoThreshold(), FoldExitBatchNormIntoFixedPoint())),
    Stage("step_pack", (PackBinaryWeights(),)),
    Stage("step_plan", (PlanBuffers(),)),
)

PIPELINE: tuple[Pass, ...] = tuple(p for stage in STAGES for p in stage.passes)

MAX_ROUNDS = 16


def run_passes(
    model: Model,
    passes: Sequence[Pass] = PIPELINE,
    after_pass: Callable[[Pass, Model], None] | None = None,
    validate_ir: bool = True,
) -> Model:
    """Deep-copy ``model`` and apply each pass until it reports no change; after each pass, call
    :func:`~ebnn_codegen.ir_check.validate` (unless ``validate_ir`` is False), then
    ``after_pass(pass, model)`` when given."""
    model = copy.deepcopy(model)
    for p in passes:
        for _ in range(MAX_ROUNDS):
            model, changed = p.apply(model)
            if not changed:
                break
        else:  # pragma: no cover - a pass that never settles is a bug
            raise RuntimeError(f"{type(p).__name__} did not reach a fixed point")
        if validate_ir:
            validate(model)
        if after_pass is not None:
            after_pass(p, model)
    return model


__all__ = [
    "PIPELINE",
    "STAGES",
    "Stage",
    "FoldBatchNormIntoThreshold",
    "FoldExitBatchNormIntoFixedPoint",
    "PackBinaryWeights",
    "PlanBuffers",
    "run_passes",
]
