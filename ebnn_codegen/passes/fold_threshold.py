"""FoldBatchNormIntoThreshold: BN + sign of a hidden block -> integer threshold + direction.

Input: the block's ``sign_runs`` — for each output channel, the runs of
sign(BN(acc)) over every integer ``acc`` in ``[-acc_bound, acc_bound]``,
evaluated by the trained module's own eval-mode batch norm (so the threshold
is exact to PyTorch's float arithmetic, not to algebra on floats).

Output per channel ``c`` (``threshold``, ``direction``, ``constant``):

* one run (the sign never changes, e.g. γ = 0): ``CONST`` with that sign;
* ``-1`` then ``+1`` from ``t`` on: ``GE``, output ``+1`` iff ``acc >= t``;
* ``+1`` then ``-1`` from ``t`` on (γ < 0): ``LE``, output ``+1`` iff ``acc <= t - 1``;
* more runs (float rounding made the sign non-monotonic): LoweringError naming
  the block and channel.  Nothing is approximated.

The threshold applies to the integer accumulator *after* max-pooling, as the
float model applies BN after pooling.

Example: runs ``[[-9, -1], [3, 1]]`` give ``GE 3``; runs ``[[-9, 1], [-2, -1]]``
give ``LE -3``.
"""

from __future__ import annotations

import numpy as np

from ..errors import LoweringError
from ..ir import CONST, GE, LE, Model


def fold_runs(runs: list[list[int]], where: str) -> tuple[int, int, int]:
    """One channel's sign runs -> (threshold, direction, constant)."""
    if len(runs) == 1:
        return 0, CONST, int(runs[0][1])
    if len(runs) == 2:
        (_, s0), (t, s1) = runs
        if s0 < 0 < s1:
            return int(t), GE, 0
        if s0 > 0 > s1:
            return int(t) - 1, LE, 0
    changes = ", ".join(str(r[0]) for r in runs[1:6])
    raise LoweringError(
        f"{where}: sign(batch norm) is not monotonic over the integer accumulator range "
        f"(float rounding makes it change at acc = {changes}); cannot fold it into one threshold"
    )


class FoldBatchNormIntoThreshold:
    def apply(self, model: Model) -> tuple[Model, bool]:
        changed = False
        for block in model.hidden:
            if block.sign_runs is None:
                continue
            f = block.out_channels
            thr = np.zeros(f, np.int32)
            direction = np.zeros(f, np.int8)
            constant = np.zeros(f, np.int8)
            for c, runs in enumerate(block.sign_runs):
                thr[c], direction[c], constant[c] = fold_runs(runs, f"block {block.index} ({block.kind}) channel {c}")
            block.threshold, block.direction, block.constant = thr, direction, constant
            block.sign_runs = None
            changed = True
        return model, changed


__all__ = ["FoldBatchNormIntoThreshold", "fold_runs", "GE", "LE", "CONST"]
