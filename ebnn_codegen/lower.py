"""Lowering: a trained torch device section -> the IR (the only torch-aware step).

For each block this reads the binary weights (sign of the shadow weights,
sign(0) = +1) and evaluates the block's *own* eval-mode batch norm on every
integer its accumulator can reach, recording where sign(BN(acc)) changes.
The fold passes turn that table into integer thresholds.  Evaluating the
module itself (twice, in two memory layouts, which must agree) makes the
thresholds exact to PyTorch's float arithmetic.  A block with explicit integer
thresholds (``"threshold": true``, imported models) gives its runs directly.
"""

from __future__ import annotations

import numpy as np
import torch

from .checkpoint import content_hash
from .errors import LoweringError
from .ir import Block, Model, Pool
from .nn.blocks import ConvBlock, LinearBlock, ThresholdSign, binary_weight
from .nn.model import DeviceSection
from .version import __version__

CHUNK = 1 << 20  # values per batch-norm evaluation

BatchNorm = torch.nn.BatchNorm1d | torch.nn.BatchNorm2d


def _float64(t: torch.Tensor | None) -> np.ndarray:
    """A batch-norm tensor as a float64 copy (torch types running statistics ``Tensor | None``)."""
    assert t is not None, "batch norm without running statistics"
    a: np.ndarray = t.detach().double().numpy().copy()
    return a


def _bn_params(bn: BatchNorm, where: str) -> dict[str, np.ndarray]:
    params = {
        "gamma": _float64(bn.weight),
        "beta": _float64(bn.bias),
        "mean": _float64(bn.running_mean),
        "var": _float64(bn.running_var),
        "eps": np.array(float(bn.eps)),
    }
    for key in ("gamma", "beta", "mean", "var"):
        bad = ~np.isfinite(params[key])
        if bad.any():
            raise LoweringError(f"{where}: batch-norm {key} of channel {int(np.flatnonzero(bad)[0])} is not finite")
    if (params["var"] < 0).any():
        raise LoweringError(
            f"{where}: batch-norm running variance of channel {int(np.flatnonzero(params['var'] < 0)[0])} is negative"
        )
    return params


@torch.no_grad()
def sign_runs(bn: BatchNorm, bound: int, where: str) -> list[list[list[int]]]:
    """Runs of sign(bn(acc)) for acc in [-bound, bound], per channel: [[start, sign], ...]."""
    bn = bn.eval()
    f = bn.num_features
    two_d = isinstance(bn, torch.nn.BatchNorm2d)
    runs: list[list[list[int]]] = [[] for _ in range(f)]
    last = np.zeros(f, np.int8)
    step = max(1, CHUNK // f)
    for start in range(-bound, bound + 1, step):
        xs = torch.arange(start, min(start + step, bound + 1), dtype=torch.float32)
        n = xs.numel()
        # layout 1: values along the spatial axis of one sample (as in a forward pass)
        a = xs.view(1, 1, n).expand(1, f, n).contiguous()
        # layout 2: values along the batch axis
        b = xs.view(n, 1).expand(n, f).contiguous()
        if two_d:
            ya = bn(a.unsqueeze(-1)).squeeze(-1)[0]
            yb = bn(b.view(n, f, 1, 1)).view(n, f).t()
        else:
            ya = bn(a)[0]
            yb = bn(b).t()
        sa = (ya >= 0).numpy()
        sb = (yb >= 0).numpy()
        if not np.array_equal(sa, sb):
            c, i = np.argwhere(sa != sb)[0]
            raise LoweringError(
                f"{where} channel {int(c)}: batch norm rounds differently with the memory layout at acc = {start + int(i)}"
            )
        if torch.isnan(ya).any():
            c = int(torch.nonzero(torch.isnan(ya))[0, 0])
            raise LoweringError(f"{where} channel {c}: batch norm produces NaN")
        s = np.where(sa, 1, -1).astype(np.int8)
        for c in range(f):
            col = s[c]
            if not runs[c]:
                runs[c].append([start, int(col[0])])
            elif col[0] != last[c]:
                runs[c].append([start, int(col[0])])
            idx = np.flatnonzero(col[1:] != col[:-1]) + 1
            for i in idx:
                runs[c].append([start + int(i), int(col[i])])
            last[c] = col[-1]
    return runs


def threshold_runs(threshold: int, direction: int, bound: int) -> list[list[int]]:
    """Runs of one channel of a :class:`~ebnn_codegen.nn.blocks.ThresholdSign` over [-bound, bound].

    >>> threshold_runs(3, 1, 9), threshold_runs(-3, -1, 9), threshold_runs(-20, 1, 9), threshold_runs(-20, -1, 9)
    ([[-9, -1], [3, 1]], [[-9, 1], [-2, -1]], [[-9, 1]], [[-9, -1]])
    """
    if direction > 0:  # +1 iff acc >= t
        if threshold <= -bound:
            return [[-bound, 1]]
        if threshold > bound:
            return [[-bound, -1]]
        return [[-bound, -1], [threshold, 1]]
    if threshold >= bound:  # +1 iff acc <= t
        return [[-bound, 1]]
    if threshold < -bound:
        return [[-bound, -1]]
    return [[-bound, 1], [threshold + 1, -1]]


def _threshold_block_runs(act: ThresholdSign, bound: int, where: str) -> list[list[list[int]]]:
    t = act.threshold.detach().cpu().numpy().astype(np.int64)
    d = act.direction.detach().cpu().numpy().astype(np.int64)
    bad = np.flatnonzero((d != 1) & (d != -1))
    if bad.size:
        raise LoweringError(
            f"{where} channel {int(bad[0])}: threshold direction must be +1 or -1, got {int(d[bad[0]])}"
        )
    return [threshold_runs(int(tc), int(dc), bound) for tc, dc in zip(t, d)]


def mirror_runs(runs: list[list[int]], bound: int) -> list[list[int]]:
    """Runs of ``s(-acc)`` from the runs of ``s(acc)`` over [-bound, bound] (a two-run channel).

    >>> mirror_runs([[-9, 1], [3, -1]], 9)
    [[-9, -1], [-2, 1]]
    """
    (_, first), (t, second) = runs
    return [[-bound, second], [-t + 1, first]]


def pool_after_sign(weights: np.ndarray, runs: list[list[list[int]]], bound: int) -> None:
    """Make ``sign -> max-pool`` exact for the kernels' ``max-pool -> threshold``, in place.

    A channel whose sign does not decrease pools its maximum accumulator already. A channel
    whose sign decreases (``LE``) takes ``s(min acc) = s(-max(-acc))``: its weights are negated
    (a zero-padded tap stays 0) and its runs mirrored, so it becomes a ``GE`` channel.
    Non-monotonic channels are left for the fold pass to refuse.
    """
    for c, r in enumerate(runs):
        if len(r) == 2 and r[0][1] > 0 > r[1][1]:
            weights[c] = -weights[c]
            runs[c] = mirror_runs(r, bound)


def lower(model: torch.nn.Module) -> Model:
    """Lower a device section (in eval mode semantics) to an IR Model; any other module is refused."""
    if not isinstance(model, DeviceSection):
        raise LoweringError(f"expected an ebnn_codegen device section, got {type(model).__name__}")
    spec = model.spec
    blocks: list[Block] = []
    for ls, module in zip(spec.layers, [*model.blocks, model.exit]):
        where = f"block {ls.index} ({ls.type})"
        if isinstance(module, ConvBlock):
            w = binary_weight(module.conv)
        elif isinstance(module, LinearBlock):  # and the exit, a LinearBlock without the sign
            w = binary_weight(module.linear).view(ls.out_channels, *ls.in_shape)
        else:  # pragma: no cover
            raise LoweringError(f"{where}: unsupported module {type(module).__name__}")
        shadow = (module.conv if isinstance(module, ConvBlock) else module.linear).weight.detach()
        if not torch.isfinite(shadow).all():
            # sign(NaN) has no binary value, and a non-finite shadow weight means training diverged
            i = int(torch.nonzero(~torch.isfinite(shadow.reshape(-1)))[0, 0])
            per = shadow.numel() // ls.out_channels
            raise LoweringError(
                f"{where}: weight {i % per} of filter {i // per} is not finite "
                f"({float(shadow.reshape(-1)[i])}; did training diverge?)"
            )
        weights = w.numpy().astype(np.int8)
        bound = ls.fan_in * (255 if ls.type == "conv" else 1)
        pool = None if ls.pool is None else Pool(ls.pool.kernel, ls.pool.stride, ls.pool.padding)
        after_sign = ls.pool is not None and ls.pool.after_sign
        bn = {} if ls.threshold else _bn_params(module.bn, where)
        block = Block(
            index=ls.index,
            kind=ls.type,
            in_shape=ls.in_shape,
            conv_shape=ls.conv_shape,
            out_shape=ls.out_shape,
            kernel=ls.kernel,
            stride=ls.stride,
            padding=ls.padding,
            pool=pool,
            weights=weights,
            acc_bound=bound,
            bn=bn,
        )
        if ls.type != "exit":
            if ls.threshold:
                block.sign_runs = _threshold_block_runs(module.act, bound, where)
            else:
                block.sign_runs = sign_runs(module.bn, bound, where)
            if after_sign:
                pool_after_sign(block.weights, block.sign_runs, bound)
        blocks.append(block)
    return Model(
        name=spec.name,
        input_shape=spec.input_shape,
        blocks=blocks,
        source_hash=content_hash(model),
        tool_version=__version__,
    )
