"""Per-block kernels generated for the ``fast`` strategy (docs/speed.md): the plan builders.

For a hidden convolution block whose window is small, the compiler emits a kernel specialised
for the block's fixed weights instead of calling the generic runtime kernel.  The functions here
compute every number of it into a :mod:`~ebnn_codegen.codegen.kernel_plan`; ``model.c.j2`` only
lays the plan out.

* Every conv position is computed once.  Max-pooling followed by the threshold is the OR of the
  threshold bits over the pool window (``max(acc) >= t`` iff some ``acc >= t``), so each
  position's bits (one byte per 8 channels) are ORed into the output pixels whose window holds
  it, and the flips are XORed in at the end.  ``rows[cy]`` and ``cols[cx]`` give the range of
  those outputs (:func:`ebnn_codegen.ir.pool_ranges`; an empty range: no window holds the
  position, it is skipped) and the border class.
* The window is gathered once into locals ``a0 .. a(K-1)`` shared by all filters: interior
  positions with constant offsets and no bounds checks, border positions with a check per tap
  and 0 for the padding.
* First block (uint8 pixels): ``acc = 2 * sum(x where w = +1) - S`` with the window sum ``S``
  shared by all filters, or ``S - 2 * sum(x where w = -1)``, whichever list is shorter; the tap
  lists and the thresholds are immediates, and pairs of taps common to several filters' lists
  are summed once.
* Binary block: the weight bytes are immediates, ``m = sum popcount(a ^ w)`` over the
  zero-filled window.  A padded tap (activation byte 0) adds ``popcount(w)`` mismatches instead
  of contributing 0 to ``acc``, so the threshold becomes a per-border-class bound on ``m``:
  ``acc >= t  <=>  m <= floor((n * C - t) / 2) + pad`` with ``n`` the taps inside and ``pad``
  the popcount of the padded taps' weights; the table holds ``bound + 1`` (clamped to
  ``[0, 8K + 1]``) and the bit is ``m < bound``.  With the AVR asm dialect
  (:mod:`~ebnn_codegen.codegen.traits`) each filter is one asm statement (6 cycles a byte)
  with the popcount table's page in ``r31``.  On 32-bit targets the window's bytes are packed
  into words (a single last byte looked up in the table), each filter's weights pre-packed in
  the same order (``wk``); SWAR counts and one multiply by 0x01010101 put ``m`` in the top byte,
  compared with ``bound << 24`` (immediates for the interior class).
  Where a binary block fits the bit-sliced kernel (:mod:`~ebnn_codegen.codegen.sliced`: stride 1,
  rows of at most 16 or 32 lanes), the 32-bit targets use that one instead (``BinKernelPlan.sliced``;
  AVR keeps the kernel above).

Limits (else the generic runtime kernel is used): window of at most 64 bytes (first block:
``C*kh*kw``, so the int16 sums cannot overflow) or 31 bytes (binary block: ``8K + 1 <= 255``, so
``m`` and the bounds are bytes); conv and output sides of at most 255; at most 64 filters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import bits
from ..ir import Block, pool_ranges
from . import avr_asm, avr_bin
from .kernel_plan import (
    BinFilter,
    BinKernelPlan,
    FlipByte,
    KernelPlan,
    PoolRange,
    PopTerm,
    SharedSum,
    Tap,
    U8Filter,
    U8KernelPlan,
    Word,
    WordPart,
    WordXor,
)
from .sliced import sliced_kernel
from .traits import PORTABLE, TargetTraits, asm_filter

MAX_U8_WINDOW = 64
MAX_BIN_WINDOW = 31
MAX_SIDE = 255
MAX_FILTERS = 64


def _valid_taps(n_conv: int, n_in: int, k: int, s: int, p: int) -> list[tuple[bool, ...]]:
    return [tuple(0 <= c * s - p + i < n_in for i in range(k)) for c in range(n_conv)]


def _classes(valid: list[tuple[bool, ...]]) -> tuple[list[int], list[tuple[bool, ...]]]:
    kinds: list[tuple[bool, ...]] = []
    idx = []
    for v in valid:
        if v not in kinds:
            kinds.append(v)
        idx.append(kinds.index(v))
    return idx, kinds


def _share_pairs(lists: list[list[str]], limit: int = 8) -> list[SharedSum]:
    """Common subexpressions of the first block's tap sums: while a pair of terms occurs in
    two or more lists, replace it by a shared partial sum ``p<n>`` (in place)."""
    pairs = []
    for n in range(limit):
        counts: dict[tuple[str, str], int] = {}
        for terms in lists:
            for i, a in enumerate(terms):
                for b in terms[i + 1 :]:
                    counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        (a, b), best = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        if best < 2:
            break
        name = f"p{n}"
        pairs.append(SharedSum(name, a, b))
        for terms in lists:
            if a in terms and b in terms:
                terms.remove(a)
                terms.remove(b)
                terms.insert(0, name)
    return pairs


def _words(window: int) -> tuple[list[list[int]], int | None]:
    """32-bit targets: the window's bytes as words of 4 (the last one partial when 2 or 3 bytes
    are left) and a single last byte (looked up in the table) when one is left."""
    full = [list(range(k, min(k + 4, window))) for k in range(0, window, 4)]
    if len(full) > 1 and len(full[-1]) == 1:
        return full[:-1], full[-1][0]
    return full, None


def _hex8(v: int) -> str:
    return f"0x{v:02x}u"


def _fits(block: Block) -> bool:
    """Whether ``block`` gets a generated kernel (the limits of the module docstring)."""
    if block.is_exit or block.kind == "blinear":
        return False
    c_in = block.in_shape[0]
    kh, kw = block.kernel
    window = c_in * kh * kw if block.is_first else kh * kw * bits.bytes_per_pixel(c_in)
    if window > (MAX_U8_WINDOW if block.is_first else MAX_BIN_WINDOW):
        return False
    _, conv_h, conv_w = block.conv_shape
    _, out_h, out_w = block.out_shape
    return max(conv_h, conv_w, out_h, out_w) <= MAX_SIDE and block.out_channels <= MAX_FILTERS


def _taps(block: Block) -> tuple[Tap, ...]:
    """The window in the order of the packed weights: u8 (c, i, j); binary (i, j, byte)."""
    c_in, h, w = block.in_shape
    kh, kw = block.kernel
    if block.is_first:
        order = [(c, i, j, 0) for c in range(c_in) for i in range(kh) for j in range(kw)]
        return tuple(Tap(k, i, j, c, n, c * h * w + i * w + j) for k, (c, i, j, n) in enumerate(order))
    cb = bits.bytes_per_pixel(c_in)
    order = [(0, i, j, n) for i in range(kh) for j in range(kw) for n in range(cb)]
    return tuple(Tap(k, i, j, c, n, (i * w + j) * cb + n) for k, (c, i, j, n) in enumerate(order))


def _geometry(block: Block, flips: np.ndarray, row_cls: list[int], col_cls: list[int]) -> dict[str, Any]:
    """The fields of :class:`KernelPlan` (shared by both kinds)."""
    c_in, h, w = block.in_shape
    f_out, conv_h, conv_w = block.conv_shape
    _, out_h, out_w = block.out_shape
    (kh, kw), (sh, sw), (ph, pw) = block.kernel, block.stride, block.padding
    pool = block.pool
    rows_r = pool_ranges(conv_h, out_h, None if pool is None else pool.axis(0))
    cols_r = pool_ranges(conv_w, out_w, None if pool is None else pool.axis(1))
    cbo = bits.bytes_per_pixel(f_out)
    gather = _taps(block)
    pixel_bytes = 1 if block.is_first else bits.bytes_per_pixel(c_in)
    flip_bytes = [int(v) for v in bits.pack_flags(flips)]
    return dict(
        first=block.is_first,
        window=len(gather),
        pixel_bytes=pixel_bytes,
        cbo=cbo,
        bytes_out=tuple(range(cbo)),
        in_h=h,
        in_w=w,
        k_h=kh,
        k_w=kw,
        kernel_rows=tuple(range(kh)),
        kernel_cols=tuple(range(kw)),
        s_h=sh,
        s_w=sw,
        p_h=ph,
        p_w=pw,
        conv_h=conv_h,
        conv_w=conv_w,
        out_w=out_w,
        out_pixels=out_h * out_w,
        out_bytes=block.out_bytes,
        max_y0=h - kh,
        max_x0=w - kw,
        has_interior=any(all(v) for v in _valid_taps(conv_h, h, kh, sh, ph)),
        rows=tuple(PoolRange(lo, hi, c) for (lo, hi), c in zip(rows_r, row_cls, strict=True)),
        cols=tuple(PoolRange(lo, hi, c) for (lo, hi), c in zip(cols_r, col_cls, strict=True)),
        gather=gather,
        flips=tuple(FlipByte(n, _hex8(v)) for n, v in enumerate(flip_bytes) if v != 0),
    )


def _border_classes(block: Block) -> tuple[list[int], list[tuple[bool, ...]], list[int], list[tuple[bool, ...]]]:
    c_in, h, w = block.in_shape
    _, conv_h, conv_w = block.conv_shape
    (kh, kw), (sh, sw), (ph, pw) = block.kernel, block.stride, block.padding
    row_cls, row_kinds = _classes(_valid_taps(conv_h, h, kh, sh, ph))
    col_cls, col_kinds = _classes(_valid_taps(conv_w, w, kw, sw, pw))
    return row_cls, row_kinds, col_cls, col_kinds


def u8_kernel(block: Block, threshold: np.ndarray, flips: np.ndarray, traits: TargetTraits = PORTABLE) -> U8KernelPlan:
    """The first block's kernel: tap lists per filter, shared pair sums, immediate thresholds;
    with the AVR dialect, one asm statement a position (:mod:`~ebnn_codegen.codegen.avr_asm`)."""
    row_cls, _, col_cls, _ = _border_classes(block)
    geo = _geometry(block, flips, row_cls, col_cls)
    window = geo["window"]
    wbits = block.weights.reshape(block.out_channels, -1) > 0  # (c, i, j) order
    s_max = 255 * window
    lists, signs = [], []
    for f in range(block.out_channels):
        plus = [f"a{int(k)}" for k in np.flatnonzero(wbits[f])]
        minus = [f"a{int(k)}" for k in np.flatnonzero(~wbits[f])]
        signs.append(len(plus) <= len(minus))
        lists.append(plus if signs[-1] else minus)
    pairs = _share_pairs(lists)
    filters = tuple(
        U8Filter(
            f=f,
            byte=f // 8,
            mask=_hex8(1 << (f % 8)),
            t=int(np.clip(int(threshold[f]), -(s_max + 1), s_max + 1)),
            plus=signs[f],
            terms=tuple(lists[f]),
        )
        for f in range(block.out_channels)
    )
    if traits.asm_dialect:
        geo.update(avr_asm.u8_fields(geo, tuple(pairs), filters))
    return U8KernelPlan(**geo, pairs=tuple(pairs), filters=filters)


def _bounds(
    block: Block, threshold: np.ndarray, row_kinds: list[tuple[bool, ...]], col_kinds: list[tuple[bool, ...]]
) -> np.ndarray:
    """``bound + 1`` per (border class, filter): (classes, F) uint8 (see the module docstring)."""
    kh, kw = block.kernel
    packed = block.packed_weights
    assert packed is not None
    c_in = block.in_shape[0]
    window = packed.shape[1]
    pc = np.array(bits.POPCOUNT8)
    tap_pc = pc[packed].reshape(block.out_channels, kh, kw, -1).sum(axis=3)  # (F, kh, kw)
    bounds = []
    for rk in row_kinds:
        for ck in col_kinds:
            inside = np.outer(rk, ck)
            n_in = int(inside.sum())
            pad = (tap_pc * ~inside[None]).sum(axis=(1, 2))
            b = (n_in * c_in - threshold.astype(np.int64)) // 2 + pad + 1
            bounds.append(np.clip(b, 0, 8 * window + 1))
    return np.stack(bounds).astype(np.uint8)


def _bin_filter(f: int, wrow: list[int], nw: int, last: int | None, interior: int, traits: TargetTraits) -> BinFilter:
    window = len(wrow)
    groups = tuple(tuple(WordXor(j, f * nw + j) for j in range(g, min(g + 3, nw))) for g in range(0, nw, 3))
    tail_w = wrow[last] if last is not None else 0
    asm = asm_filter(traits.asm_dialect, wrow) if traits.asm_dialect and window <= traits.max_asm_window else ()
    return BinFilter(
        f=f,
        byte=f // 8,
        mask=_hex8(1 << (f % 8)),
        terms=tuple(PopTerm(k, v, _hex8(v)) for k, v in enumerate(wrow)),
        asm=asm,
        groups=groups,
        tail_w=tail_w,
        tail_hex=_hex8(tail_w),
        interior_bound=interior,
        interior_hex=f"0x{interior:08x}u",
    )


def _weight_words(packed: np.ndarray, words: list[list[int]]) -> list[int]:
    """The filters' weight words in the order of ``kw[]`` (word j of filter f at f * nw + j)."""
    return [
        sum(int(packed[f, b]) << (8 * n) for n, b in enumerate(idx)) for f in range(packed.shape[0]) for idx in words
    ]


def _row_text(values: list[int], fmt: str, per_row: int | None = None) -> tuple[str, ...]:
    per = per_row or max(1, len(values))
    return tuple(", ".join(fmt.format(v) for v in values[i : i + per]) + "," for i in range(0, len(values), per))


def bin_kernel(block: Block, threshold: np.ndarray, flips: np.ndarray, traits: TargetTraits) -> BinKernelPlan:
    """A binary block's kernel: bounds per border class, AVR asm and 32-bit SWAR counts."""
    row_cls, row_kinds, col_cls, col_kinds = _border_classes(block)
    geo = _geometry(block, flips, row_cls, col_cls)
    window = geo["window"]
    kh, kw = block.kernel
    packed = block.packed_weights
    assert packed is not None
    table = _bounds(block, threshold, row_kinds, col_kinds)
    inner = (True,) * kh, (True,) * kw
    has_ic = inner[0] in row_kinds and inner[1] in col_kinds
    ic = row_kinds.index(inner[0]) * len(col_kinds) + col_kinds.index(inner[1]) if has_ic else -1
    immediates = has_ic and traits.barrel_shifter is not False
    border = not immediates or len(table) > 1
    words, last = _words(window)
    filters = tuple(
        _bin_filter(f, [int(v) for v in packed[f]], len(words), last, int(table[ic, f]) << 24 if has_ic else 0, traits)
        for f in range(block.out_channels)
    )
    interior = tuple(f for f in filters if f.interior_bound) if immediates else ()
    sliced = sliced_kernel(block, table, row_cls, col_cls, len(col_kinds), [int(v) for v in bits.pack_flags(flips)])
    if filters[0].asm:
        geo.update(avr_bin.bin_fields(geo, packed, table, ic))
    return BinKernelPlan(
        **geo,
        filters=filters,
        interior_filters=interior,
        n_col_classes=len(col_kinds),
        n_classes=len(table),
        bounds_rows=tuple(_row_text([int(v) for v in row], "{}")[0] for row in table),
        bounds32_rows=tuple(_row_text([int(v) << 24 for v in row], "0x{:08x}u")[0] for row in table),
        words=tuple(Word(f"w{j}", tuple(WordPart(b, 8 * n) for n, b in enumerate(idx))) for j, idx in enumerate(words)),
        wk_rows=_row_text(_weight_words(packed, words), "0x{:08x}u", 6),
        wk_len=block.out_channels * len(words),
        has_tail=last is not None,
        tail="" if last is None else f"a{last}",
        avr_asm=bool(filters[0].asm),
        border_bounds=border,
        has_interior_class=has_ic,
        interior_class=ic,
        interior_guard=immediates and border and traits.barrel_shifter is None,
        interior_immediates=immediates,
        uses_swar=border or bool(interior),
        sliced=sliced,
    )


def conv_kernel(
    block: Block, threshold: np.ndarray, flips: np.ndarray, traits: TargetTraits = PORTABLE
) -> KernelPlan | None:
    """The plan of a generated kernel for ``block``, or None when the generic one is used.

    ``threshold`` and ``flips`` are the C form (out bit = (acc >= t) XOR flip).
    """
    if not _fits(block):
        return None
    if block.is_first:
        return u8_kernel(block, threshold, flips, traits)
    return bin_kernel(block, threshold, flips, traits)
