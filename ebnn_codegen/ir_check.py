"""``validate``: the invariants of the IR at every stage, checked after every pass.

The pass driver (:func:`ebnn_codegen.passes.run_passes`) calls :func:`validate` after each pass
(its ``after_pass`` hook), and :func:`ebnn_codegen.ir.load` after reading an IR from disk.  What
is checked depends on how far the pipeline got, and the stages must be reached in order:

* always: block indices 0..n-1, the first block ``conv`` and only it, the last ``exit``; each
  block's input shape is the previous block's output; conv and pool shapes follow the floor
  formula; weights int8 ±1 of shape (F, C, kh, kw); a positive accumulator bound;
* once folded (``threshold`` set): every hidden block has int32 ``threshold`` and int8
  ``direction`` (GE, LE or CONST) and ``constant`` (±1 exactly where CONST) of shape (F,); the
  exit has int32 ``score_mul``/``score_add`` of shape (K,) and the model a score scale;
* once packed: uint8 weights of shape (F, bytes per filter) in the layouts of
  :mod:`ebnn_codegen.bits`, unpacking back to the ±1 weights;
* once planned: the buffer plan matches the blocks' output sizes.

A violation raises :class:`IRError` (a :class:`~ebnn_codegen.errors.CodegenError`, as an IR read
from disk may be damaged) naming the block and field.  Limits: the thresholds are not re-derived
from the batch norm (that is the fold pass's own test); this checks structure, not training.
"""

from __future__ import annotations

import numpy as np

from . import bits
from .errors import CodegenError
from .ir import CONST, GE, LE, Block, Model


class IRError(CodegenError):
    """The IR breaks one of its invariants."""


def _require(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise IRError(f"invalid IR: {where}: {what}")


def _out_side(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _check_shapes(b: Block, where: str) -> None:
    c, h, w = b.in_shape
    f, ch, cw = b.conv_shape
    _require(
        (ch, cw) == tuple(_out_side(n, *a) for n, a in zip((h, w), zip(b.kernel, b.stride, b.padding), strict=True)),
        where,
        f"conv shape {b.conv_shape} does not follow from input {b.in_shape}",
    )
    oh, ow = (ch, cw) if b.pool is None else (_out_side(ch, *b.pool.axis(0)), _out_side(cw, *b.pool.axis(1)))
    _require(b.out_shape == (f, oh, ow), where, f"output shape {b.out_shape} does not follow from conv {b.conv_shape}")
    wt = b.weights
    _require(wt.shape == (f, c, *b.kernel), where, f"weights shape {wt.shape}, expected {(f, c, *b.kernel)}")
    _require(wt.dtype == np.int8 and bool(np.all(np.abs(wt) == 1)), where, "weights must be int8 ±1")
    _require(b.acc_bound > 0, where, "accumulator bound must be positive")


def _check_fold(b: Block, where: str) -> None:
    f = b.out_channels
    if b.is_exit:
        for name in ("score_mul", "score_add"):
            v = getattr(b, name)
            _require(v is not None and v.shape == (f,) and v.dtype == np.int32, where, f"{name} must be int32 ({f},)")
        return
    t, d, k = b.threshold, b.direction, b.constant
    _require(t is not None and t.shape == (f,) and t.dtype == np.int32, where, f"threshold must be int32 ({f},)")
    _require(d is not None and d.shape == (f,) and bool(np.all(np.isin(d, (GE, LE, CONST)))), where, "bad direction")
    assert d is not None
    _require(
        k is not None and k.shape == (f,) and bool(np.all((k != 0) == (d == CONST)) and np.all(np.abs(k) <= 1)),
        where,
        "constant must be ±1 exactly on CONST channels",
    )


def _check_packed(b: Block, where: str) -> None:
    p = b.packed_weights
    assert p is not None
    unpack = bits.unpack_weights_stream if b.is_first else bits.unpack_weights_hwc
    _require(p.dtype == np.uint8 and p.ndim == 2 and p.shape[0] == b.out_channels, where, "packed weights shape")
    _require(np.array_equal(unpack(p, b.weights.shape), b.weights), where, "packed weights do not unpack to weights")


def _check_buffers(model: Model) -> None:
    buf = model.plan
    sizes = [b.out_bytes for b in model.hidden]
    _require(len(buf.slot) == len(sizes) and len(buf.trace_offsets) == len(sizes), "buffers", "one slot per block")
    _require(buf.trace_bytes == sum(sizes), "buffers", "trace size differs from the blocks' outputs")
    for i, s in enumerate(sizes):
        _require(buf.slot_offset[buf.slot[i]] + s <= buf.workspace_bytes, "buffers", f"block {i} overflows its slot")
        _require(buf.trace_offsets[i] == sum(sizes[:i]), "buffers", f"block {i} trace offset")


def _stage(model: Model) -> tuple[bool, bool, bool, bool]:
    """(hidden folded, exit folded, packed, planned), each all-or-none, reached in pipeline order."""
    folded = [b.threshold is not None for b in model.hidden]
    packed = [b.packed_weights is not None for b in model.blocks]
    _require(all(folded) or not any(folded), "stage", "some hidden blocks folded, others not")
    _require(all(packed) or not any(packed), "stage", "some blocks packed, others not")
    exit_folded = model.exit.score_mul is not None
    planned = model.buffers is not None
    _require(not exit_folded or all(folded), "stage", "exit folded before the hidden blocks")
    _require(not all(packed) or exit_folded, "stage", "weights packed before the fold")
    _require(not planned or all(packed), "stage", "buffers planned before the weights were packed")
    return all(folded), exit_folded, all(packed), planned


def validate(model: Model) -> Model:
    """Check ``model`` (see the module docstring); returns it unchanged, raises :class:`IRError`."""
    _require(len(model.blocks) >= 2, "model", "needs a first block and an exit")
    for i, b in enumerate(model.blocks):
        where = f"block {i} ({b.kind})"
        _require(b.index == i, where, f"index {b.index}")
        _require(b.is_first == (i == 0) and b.is_exit == (i == len(model.blocks) - 1), where, "kind out of place")
        expected = model.input_shape if i == 0 else model.blocks[i - 1].out_shape
        _require(b.in_shape == expected, where, f"input shape {b.in_shape}, previous output {expected}")
        _check_shapes(b, where)
    hidden_folded, exit_folded, packed, planned = _stage(model)
    for b in model.blocks if hidden_folded else ():
        if not b.is_exit or exit_folded:
            _check_fold(b, f"block {b.index} ({b.kind})")
    if exit_folded:
        _require(model.score_scale_log2 is not None, "model", "exit folded without a score scale")
    for b in model.blocks if packed else ():
        _check_packed(b, f"block {b.index} ({b.kind})")
    if planned:
        _check_buffers(model)
    return model
