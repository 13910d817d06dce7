"""FoldExitBatchNormIntoFixedPoint: the exit's BN -> an integer affine per class.

The float model computes ``score_k = a_k * acc_k + b_k`` with
``a = γ / sqrt(var + eps)`` and ``b = β - mean * a``.  The device computes
``S_k = round(a_k * 2**s) * acc_k + round(b_k * 2**s)`` in int32, so that
``S_k / 2**s ≈ score_k``.  The exponent ``s`` (``Model.score_scale_log2``) is
the largest one (at most 30) for which no class can overflow int32 over the
whole accumulator range ``|acc| <= acc_bound`` — whatever the statistics, so
it may be negative for extreme ones.  The worst-case difference to the exact
affine is ``score_resolution = (acc_bound / 2 + 1 / 2) / 2**s``.

Ties in the integer scores go to the lowest class index, as ``torch.argmax``.
"""

from __future__ import annotations

import numpy as np

from ..errors import LoweringError
from ..ir import Model

INT32_MAX = 2**31 - 1
MAX_LOG2 = 30
MIN_LOG2 = -64


def affine_from_bn(bn: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    a = bn["gamma"] / np.sqrt(bn["var"] + bn["eps"])
    b = bn["beta"] - bn["mean"] * a
    return a, b


def choose_scale(a: np.ndarray, b: np.ndarray, acc_bound: int) -> int:
    for s in range(MAX_LOG2, MIN_LOG2 - 1, -1):
        mul = np.abs(np.round(a * 2.0**s))
        add = np.abs(np.round(b * 2.0**s))
        if float(np.max(mul * acc_bound + add)) <= INT32_MAX:
            return s
    raise LoweringError("exit block: batch-norm scale too large for any int32 fixed-point scale")


class FoldExitBatchNormIntoFixedPoint:
    def apply(self, model: Model) -> tuple[Model, bool]:
        block = model.exit
        if block.score_mul is not None:
            return model, False
        a, b = affine_from_bn(block.bn)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            bad = int(np.flatnonzero(~(np.isfinite(a) & np.isfinite(b)))[0])
            raise LoweringError(f"exit block {block.index}: batch norm of class {bad} is not finite")
        s = choose_scale(a, b, block.acc_bound)
        block.score_mul = np.round(a * 2.0**s).astype(np.int32)
        block.score_add = np.round(b * 2.0**s).astype(np.int32)
        model.score_scale_log2 = s
        model.score_resolution = (block.acc_bound / 2 + 0.5) / 2.0**s
        return model, True
