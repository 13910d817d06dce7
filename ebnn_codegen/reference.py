"""The integer-only reference interpreter of the IR: the oracle between torch and C.

It computes with int64 numpy arrays only (no floats), in the block order of
the device code: conv (zero padding: a padded tap contributes 0) -> max-pool
(padding -inf) -> integer threshold with direction -> ±1, and for the exit the
fixed-point affine ``mul * acc + add`` in int32 with argmax ties to the lowest
index.  Binary weights are read back from the packed bytes, so the packing is
part of what this oracle checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import bits
from .errors import CodegenError
from .ir import CONST, GE, Block, Model

_NEG = np.iinfo(np.int64).min // 2


@dataclass
class Result:
    pred: np.ndarray  # int64 (N,)
    scores: np.ndarray  # int32 (N, K)
    layers: list[np.ndarray]  # int8 ±1 per hidden block, shaped as torch's ((N, F) for blinear)
    accumulators: np.ndarray  # int64 (N, K): the exit's integer dot products


def block_weights(block: Block) -> np.ndarray:
    """±1 weights (F, C, kh, kw) read back from the packed bytes when present."""
    shape = (block.out_channels, block.in_shape[0], *block.kernel)
    if block.packed_weights is None:
        return block.weights.astype(np.int64)
    if block.is_first:
        return bits.unpack_weights_stream(block.packed_weights, shape).astype(np.int64)
    return bits.unpack_weights_hwc(block.packed_weights, shape).astype(np.int64)


def conv(x: np.ndarray, w: np.ndarray, stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """Integer cross-correlation, zero padding: x (N, C, H, W), w (F, C, kh, kw) -> (N, F, OH, OW)."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    ph, pw = padding
    sh, sw = stride
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), np.int64)
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (wd + 2 * pw - kw) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
    # win: (N, C, OH, OW, kh, kw)
    acc: np.ndarray = np.einsum("nchwij,fcij->nfhw", win, w, optimize=True)
    return acc


def max_pool(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), _NEG, np.int64)
    xp[:, :, ph : ph + h, pw : pw + w] = x
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
    pooled: np.ndarray = win.max(axis=(-2, -1))
    return pooled


def threshold(acc: np.ndarray, block: Block) -> np.ndarray:
    """Apply per-channel thresholds to (N, F, H, W) accumulators -> int8 ±1."""
    f = block.folded
    t = f.threshold.astype(np.int64)[None, :, None, None]
    d = f.direction[None, :, None, None]
    k = f.constant[None, :, None, None]
    plus = np.where(d == GE, acc >= t, acc <= t)
    plus = np.where(d == CONST, k > 0, plus)
    return np.where(plus, 1, -1).astype(np.int8)


def run_block(block: Block, x: np.ndarray) -> np.ndarray:
    """Accumulators of one block after pooling: (N, F, H, W) int64."""
    acc = conv(x, block_weights(block), block.stride, block.padding)
    if block.pool is not None:
        acc = max_pool(acc, block.pool.kernel, block.pool.stride, block.pool.padding)
    return acc


CHUNK = 256


def run(model: Model, x: np.ndarray) -> Result:
    """Run the IR on uint8 inputs (N, C, H, W), CHUNK samples at a time."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise CodegenError(
            f"input must be uint8 N×{'×'.join(map(str, model.input_shape))}, got {x.dtype} {tuple(x.shape)}"
        )
    if len(x) <= CHUNK:
        return _run(model, x)
    parts = [_run(model, x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]
    return Result(
        pred=np.concatenate([p.pred for p in parts]),
        scores=np.concatenate([p.scores for p in parts]),
        layers=[np.concatenate([p.layers[i] for p in parts]) for i in range(len(model.hidden))],
        accumulators=np.concatenate([p.accumulators for p in parts]),
    )


def _run(model: Model, x: np.ndarray) -> Result:
    act = x.astype(np.int64)
    layers = []
    for block in model.hidden:
        out = threshold(run_block(block, act), block)
        layers.append(out.reshape(len(x), *block.torch_shape))
        act = out.astype(np.int64)
    ex = model.exit
    affine = ex.affine
    acc = run_block(ex, act)[:, :, 0, 0]
    scores = acc * affine.mul.astype(np.int64)[None] + affine.add.astype(np.int64)[None]
    if np.abs(scores).max(initial=0) > 2**31 - 1:  # the scale choice rules this out
        raise AssertionError("exit score overflows int32")
    scores = scores.astype(np.int32)
    return Result(pred=scores.argmax(axis=1).astype(np.int64), scores=scores, layers=layers, accumulators=acc)
