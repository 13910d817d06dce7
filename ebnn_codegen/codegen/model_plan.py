"""The plan of one model's C file: per block, every constant and offset ``model.c.j2`` lays out.

:func:`block_plans` turns the IR (after the pass pipeline) into :class:`HiddenPlan` and
:class:`ExitPlan` values; the generated kernels' plans come from
:mod:`ebnn_codegen.codegen.kernels`.  Arrays are pre-formatted into rows of C literals; every
other field is a number, a name or a flag, so the templates never compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import bits
from ..ir import CONST, GE, LE, Block, Buffers, Model, Pool
from . import avr_asm
from .kernel_plan import KernelPlan, LinearAvrPlan
from .kernels import conv_kernel
from .traits import TargetTraits


def rows(values: Any, per_row: int, fmt: str = "{}") -> list[str]:
    """``values`` as C initializer rows of ``per_row`` literals, each ending in a comma."""
    flat = [fmt.format(int(v)) for v in np.asarray(values).reshape(-1)]
    if not flat:
        return []
    return [", ".join(flat[i : i + per_row]) + "," for i in range(0, len(flat), per_row)]


def hex_rows(values: Any) -> list[str]:
    return rows(values, 16, "0x{:02x}")


@dataclass(frozen=True)
class BlockPlan:
    """What every block's constants need. ``padded_rows``: weight rows zero-padded to 4 bytes on
    32-bit targets (``row_stride`` bytes, ``weight_rows2d`` per filter); ``word_rows``: the rows
    are 4-byte aligned for the runtime's word kernels."""

    index: int
    kind: str
    is_exit: bool
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    pool: Pool | None
    pool_fields: tuple[int, ...]
    in_c: int
    in_h: int
    in_w: int
    out_c: int
    conv_h: int
    conv_w: int
    out_h: int
    out_w: int
    w_bytes: int
    weight_len: int
    weight_rows: tuple[str, ...]
    out_bytes: int
    word_rows: bool
    padded_rows: bool
    row_stride: int
    weight_rows2d: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class ExitPlan(BlockPlan):
    mul: tuple[str, ...]
    add: tuple[str, ...]
    in_offset: int
    avr_linear: LinearAvrPlan | None = None


@dataclass(frozen=True)
class HiddenPlan(BlockPlan):
    """A hidden block: ``spec`` is its generated kernel or None (the runtime's ``fn`` kernel);
    its input is ``input`` (``from_input``) or the workspace at ``in_offset``."""

    fn: str
    threshold_rows: tuple[str, ...]
    spec: KernelPlan | None
    flips: tuple[str, ...]
    flip_len: int
    out_offset: int
    out_end: int
    trace_offset: int
    from_input: bool
    in_offset: int
    avr_linear: LinearAvrPlan | None = None


def flip_and_threshold(block: Block) -> tuple[np.ndarray, np.ndarray]:
    """IR (threshold, direction, constant) -> C form: out bit = (acc >= t) XOR flip.

    GE t: t, flip 0.  LE t: acc <= t  <=>  !(acc >= t + 1): t + 1, flip 1.
    CONST +1: -(bound + 1) (always >=), flip 0.  CONST -1: bound + 1 (never >=), flip 0.
    """
    f = block.folded
    t = f.threshold.astype(np.int64).copy()
    flip = np.zeros(len(t), bool)
    le = f.direction == LE
    t[le] += 1
    flip[le] = True
    const = f.direction == CONST
    t[const & (f.constant > 0)] = -(block.acc_bound + 1)
    t[const & (f.constant < 0)] = block.acc_bound + 1
    assert np.all((f.direction == GE) | le | const)
    return t.astype(np.int32), flip


def _common(b: Block, kernels: str) -> dict[str, Any]:
    c, h, w = b.in_shape
    pool = b.pool
    packed = b.packed
    pool_fields = (0, 0, 1, 1, 0, 0) if pool is None else (*pool.kernel, *pool.stride, *pool.padding)
    word_rows = (not b.is_first) and kernels == "fast"
    return dict(
        index=b.index,
        kind=b.kind,
        is_exit=b.is_exit,
        in_shape=b.in_shape,
        out_shape=b.out_shape,
        kernel=b.kernel,
        stride=b.stride,
        padding=b.padding,
        pool=pool,
        pool_fields=pool_fields,
        in_c=c,
        in_h=h,
        in_w=w,
        out_c=b.out_channels,
        conv_h=b.conv_shape[1],
        conv_w=b.conv_shape[2],
        out_h=b.out_shape[1],
        out_w=b.out_shape[2],
        w_bytes=packed.shape[1],
        weight_len=packed.size,
        weight_rows=tuple(hex_rows(packed)),
        out_bytes=b.out_bytes,
        word_rows=word_rows,
    )


def _rows_layout(common: dict[str, Any], packed: np.ndarray, generated: bool) -> dict[str, Any]:
    """Binary blocks left to the runtime kernels: rows 4-byte aligned on 32-bit targets."""
    word_rows = common["word_rows"] and not generated
    pad = (-packed.shape[1]) % 4 if word_rows else 0
    return dict(
        word_rows=word_rows,
        padded_rows=pad > 0,
        row_stride=packed.shape[1] + pad,
        weight_rows2d=tuple(tuple(hex_rows(row)) for row in packed) if pad else (),
    )


def exit_plan(b: Block, kernels: str, buf: Buffers, traits: TargetTraits) -> ExitPlan:
    affine = b.affine
    common = _common(b, kernels)
    common.update(_rows_layout(common, b.packed, False))
    avr = kernels == "fast" and traits.asm_dialect == "avr"
    return ExitPlan(
        **common,
        mul=tuple(str(int(v)) for v in affine.mul),
        add=tuple(str(int(v)) for v in affine.add),
        in_offset=buf.slot_offset[buf.slot[-1]],
        avr_linear=avr_asm.linear_plan(b.packed, int(np.prod(b.in_shape))) if avr else None,
    )


def hidden_plan(b: Block, kernels: str, buf: Buffers, traits: TargetTraits) -> HiddenPlan:
    t, flip = flip_and_threshold(b)
    spec = conv_kernel(b, t, flip, traits) if kernels == "fast" else None
    common = _common(b, kernels)
    common.update(_rows_layout(common, b.packed, spec is not None))
    flips = bits.pack_flags(flip)
    out_offset = buf.slot_offset[buf.slot[b.index]]
    linear = kernels == "fast" and traits.asm_dialect == "avr" and b.kind == "blinear" and not b.is_first
    total = int(np.prod(b.in_shape))
    return HiddenPlan(
        **common,
        fn="u8" if b.is_first else "bin",
        threshold_rows=tuple(rows(t, 12)),
        spec=spec,
        flips=tuple(f"0x{int(v):02x}" for v in flips),
        flip_len=len(flips),
        out_offset=out_offset,
        out_end=out_offset + b.out_bytes,
        trace_offset=buf.trace_offsets[b.index],
        from_input=b.index == 0,
        in_offset=0 if b.index == 0 else buf.slot_offset[buf.slot[b.index - 1]],
        avr_linear=avr_asm.linear_plan(b.packed, total, t, flip) if linear else None,
    )


def block_plans(model: Model, kernels: str, traits: TargetTraits) -> tuple[list[HiddenPlan], ExitPlan]:
    buf = model.plan
    hidden = [hidden_plan(b, kernels, buf, traits) for b in model.hidden]
    return hidden, exit_plan(model.exit, kernels, buf, traits)
