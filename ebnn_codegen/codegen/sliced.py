"""The bit-sliced binary conv kernel of the 32-bit targets (docs/speed.md, "bit-sliced").

The conv positions are the lanes of a word: two conv rows of up to 16 columns a word (one row of
up to 32 when the rows are wider), bit ``16 * h + x`` for row ``2g + h`` of group ``g``.  For a
group, each window tap ``(i, j, c)`` is a *plane*: the word of input bit ``c`` under that tap at
every lane, zero where the tap falls in the padding.  The mismatch count of filter ``f`` at every
lane at once is then a sum of planes, computed with carry-save adders (5 logic operations per
3-to-2 step, 32 lanes at a time) into bit-sliced counters:

* ``S = sum of all planes`` (the window's popcount at each lane) is shared by all filters;
* ``m = sum over taps of (plane XOR w)``: with ``n1`` taps of weight 1,
  ``m = S - 2 * T1 + n1`` (``T1``: the planes under weight 1) or ``m = 2 * T0 + n1 - S``
  (``T0``: under weight 0), whichever list is shorter, so a filter adds at most half the taps.
  The subtraction is a complement: ``V = S + 2 * sum(~p for p in T1)`` (``V = m + n1``) or
  ``V = 2 * sum(T0) + ~S`` (``V = m - n1 + 2**sb - 1``).  The weights are compile-time constants,
  so a complemented plane costs nothing: the generator tracks each value's polarity and picks the
  adder form that absorbs it.
* The bit is ``m < bound`` (the per-border-class bound of :func:`~ebnn_codegen.codegen.kernels._bounds`),
  i.e. ``V < B'`` with ``B' = bound + offset`` per lane; ``B'`` is a handful of constant words
  (one per bit of ``V``), compared LSB first (``lt = maj(~v, b, lt)``), from a table per *group
  class* (the border classes of the group's rows) where they differ between groups.
* Max-pooling is the OR of the bits (as in the other kernels): along x, shifted ORs of the word;
  along y, each output row ORs its conv rows from a ring of the last groups' words (written as
  soon as its last group is done); then the bits are moved to the packed output bytes and the
  flips XORed in.
* The planes stay in memory behind ``EBNN_FENCE`` (each filter loads them as it adds them) and
  ``EBNN_ORDER`` keeps the adders in the order written (few live values); both are in
  ``ebnn_runtime.h``.  ``-DEBNN_COMPACT`` at compile time selects the word kernel instead.

Limits (else the word-wide kernel of :mod:`.kernels` is used): stride 1; the lanes and the pool's
reach fit 16 (or 32) bits, checked lane by lane against :func:`~ebnn_codegen.ir.pool_ranges`; at
most :data:`MAX_TERMS` plane terms over all filters (the code is straight-line per filter) and
:data:`MAX_STACK_BYTES` of arrays; and the limits of the generated kernels (:mod:`.kernels`).
"""

from __future__ import annotations

import numpy as np

from .. import bits
from ..ir import Block, pool_ranges
from .carry_save import Emitter, Value, compare, count
from .kernel_plan import SlicedPlan

MAX_TERMS = 1200  # plane terms over all filters: about 20 KB of straight-line code at the most
MAX_STACK_BYTES = 8192


def _pool_shifts(pool: tuple[int, int, int] | None) -> tuple[int, int, int]:
    return (1, 1, 0) if pool is None else pool


def _lane_check(conv_w: int, out_w: int, pool: tuple[int, int, int] | None, lanes: int, rows: int) -> bool:
    """Whether ``h = OR_d (r << p) >> d`` (``d < k``) holds at bit ``lanes * half + s * ox`` the OR
    of exactly that output column's conv columns of that half (simulated bit by bit)."""
    k, s, p = _pool_shifts(pool)
    ranges = pool_ranges(conv_w, out_w, pool)
    valid = {lanes * h + x for h in range(rows) for x in range(conv_w)}
    for half in range(rows):
        for ox in range(out_w):
            e = lanes * half + s * ox
            if s * ox >= lanes:
                return False
            want = {lanes * half + cx for cx, (lo, hi) in enumerate(ranges) if lo <= ox < hi}
            got = {e + d - p for d in range(k) if e + d <= 31 and e + d - p >= 0} & valid
            if got != want:
                return False
    return True


def _layout(block: Block) -> tuple[int, int] | None:
    """(lanes, rows a word): two rows of 16 lanes, else one row of 32, else None."""
    _, _, in_w = block.in_shape
    _, _, conv_w = block.conv_shape
    _, kw = block.kernel
    pw = block.padding[1]
    pool_x = None if block.pool is None else block.pool.axis(1)
    for lanes, rows in ((16, 2), (32, 1)):
        reach = max(conv_w + kw - 1 - pw, in_w + pw)  # bits of the plane words a half may touch
        if reach <= lanes and _lane_check(conv_w, block.out_shape[2], pool_x, lanes, rows):
            return lanes, rows
    return None


def _word(pixels: list[int], cb: int, n: int) -> str:
    """Byte ``n`` of up to 4 pixels as one word, pixel ``x`` in byte ``x % 4``."""
    parts = [f"(uint32_t)px[{x * cb + n}]" + (f" << {8 * (x % 4)}" if x % 4 else "") for x in pixels]
    return " | ".join(f"({p})" if "<<" in p else p for p in parts) or "0u"


def _transpose(in_w: int, c_in: int, cb: int, ph: int, cast: str) -> list[str]:
    """Statements of one input row ``y``: ``rw[y + ph][c]`` gets bit ``x`` = channel ``c`` of pixel
    ``(y, x)``.  Eight pixels of one channel byte at a time: the 8x8 bit matrix (pixel = byte of
    two words, channel = bit) is transposed in three swap steps (Hacker's Delight, 7-3), so that
    byte ``c`` of the result holds channel ``c`` of the eight pixels."""
    lines = [f"const uint8_t *px = in + y * {in_w * cb};"]
    for n in range(cb):
        chans = list(range(8 * n, min(8 * n + 8, c_in)))
        acc: dict[int, list[str]] = {c: [] for c in chans}
        for k in range(0, in_w, 8):
            xs = list(range(k, min(k + 8, in_w)))
            lo, hi = f"l{n}_{k}", f"h{n}_{k}"
            lines.append(f"uint32_t {lo} = {_word(xs[:4], cb, n)}, {hi} = {_word(xs[4:], cb, n)}, t{n}_{k};")
            for w in (lo, hi) if len(xs) > 4 else (lo,):
                lines.append(f"t{n}_{k} = ({w} ^ ({w} >> 7)) & 0x00aa00aau;")
                lines.append(f"{w} ^= t{n}_{k} ^ (t{n}_{k} << 7);")
                lines.append(f"t{n}_{k} = ({w} ^ ({w} >> 14)) & 0x0000ccccu;")
                lines.append(f"{w} ^= t{n}_{k} ^ (t{n}_{k} << 14);")
            lines.append(f"t{n}_{k} = ({lo} ^ ({hi} << 4)) & 0xf0f0f0f0u;")
            lines.append(f"{lo} ^= t{n}_{k};")
            lines.append(f"{hi} ^= t{n}_{k} >> 4;")
            for c in chans:
                b = c - 8 * n
                w, sh = (lo, 8 * b) if b < 4 else (hi, 8 * (b - 4))
                byte = f"(({w} >> {sh}) & 0xffu)" if sh else f"({w} & 0xffu)"
                acc[c].append(f"({byte} << {k})" if k else byte)
        for c in chans:
            lines.append(f"rw[y + {ph}][{c}] = {cast}({' | '.join(acc[c])});")
    return lines


def _planes(block: Block, rows: int) -> list[str]:
    """Statements filling ``pl[]`` for group ``g`` (``r``: the group's first row of ``rw``; its
    lower half is conv row ``rows * g``): tap ``(i, j, c)`` at ``(i * kw + j) * C + c``."""
    c_in = block.in_shape[0]
    kh, kw = block.kernel
    pw = block.padding[1]
    lines = []
    for i in range(kh):
        for c in range(c_in):
            q = f"q{i}_{c}"
            if rows == 2:
                lines.append(f"const uint32_t {q} = r[{i * c_in + c}] | ((uint32_t)r[{(i + 1) * c_in + c}] << 16);")
            else:
                lines.append(f"const uint32_t {q} = r[{i * c_in + c}];")
            for j in range(kw):
                d = j - pw
                expr = q if d == 0 else f"{q} >> {d}" if d > 0 else f"{q} << {-d}"
                lines.append(f"pl[{(i * kw + j) * c_in + c}] = {expr};")
    return lines


def _window_sum(n_taps: int) -> tuple[list[str], int]:
    """The statements storing ``S`` (every plane summed) in ``sp[]``, and its number of bits."""
    em = Emitter("s")
    levels = count(em, [(0, f"pl[{t}]", False) for t in range(n_taps)])
    sb = max(levels) + 1
    assert all(not p for _, p in levels.values())  # no complemented input, none out
    for k in range(sb):
        em.emit(f"sp[{k}] = {levels[k][0]};" if k in levels else f"sp[{k}] = 0u;")
    return em.lines(), sb


def _bound_planes(bounds: np.ndarray, offset: int, vmax: int, lanes: int) -> np.ndarray:
    """(group classes, K) words of ``B' = bound + offset`` per lane (0 for lanes without a conv
    position; clamped to ``[0, vmax + 1]``, which keeps ``V < B'`` exact).  ``bounds``: (group
    classes, rows, conv_w), -1 where the group has no such row."""
    n_gc, rows, conv_w = bounds.shape
    vals = np.zeros((n_gc, 32), np.int64)
    for h in range(rows):
        b = np.clip(bounds[:, h] + offset, 0, vmax + 1)
        vals[:, lanes * h : lanes * h + conv_w] = np.where(bounds[:, h] < 0, 0, b)
    nbits = max(int(vals.max()).bit_length(), 1)
    weights = np.int64(1) << np.arange(32, dtype=np.int64)
    return np.stack([((vals >> k) & 1) @ weights for k in range(nbits)], axis=1)


def _filter(
    f: int, w: np.ndarray, sb: int, bounds: np.ndarray, lanes: int, lane_mask: int, pool_x: tuple[int, int, int] | None
) -> tuple[list[str], list[list[int]]]:
    """Filter ``f`` (weights ``w``, one bool a tap): the count ``V`` of its shorter tap list and
    ``S``, the compare, the x pooling, the store into ``hw``; and its table words of ``B'``."""
    em = Emitter("t")
    em.emit(f"/* filter {f} */")
    n_taps, n1 = len(w), int(w.sum())
    use_ones = n1 <= n_taps - n1
    taps = np.flatnonzero(w if use_ones else ~w)
    inputs: list[tuple[int, str, bool]] = [(1, f"pl[{int(t)}]", use_ones) for t in taps]
    inputs += [(k, f"sp[{k}]", not use_ones) for k in range(sb)]
    if use_ones:  # V = S + 2 * sum(~p, w = 1) = m + n1
        offset, vmax = n1, n_taps + 2 * n1
    else:  # V = 2 * sum(p, w = 0) + ~S = m - n1 + 2**sb - 1
        offset, vmax = (1 << sb) - 1 - n1, 2 * (n_taps - n1) + (1 << sb) - 1
    v: dict[int, Value] = count(em, inputs)
    table: list[list[int]] = []
    lt = compare(em, v, _bound_planes(bounds, offset, vmax, lanes), lane_mask, table)
    k, _, p = _pool_shifts(pool_x)
    r = f"({lt} & 0x{lane_mask:08x}u)"
    if k == 1:
        h_expr = r
    else:
        g = em.new(f"{r} << {p}" if p else r)
        h_expr = " | ".join([g] + [f"({g} >> {d})" for d in range(1, k)])
    em.emit(f"hw[slot][{f}] = {h_expr};")
    return em.lines(), table


def _out_rows(block: Block, rows: int) -> list[tuple[int, int, int]] | None:
    """Each output row's conv rows ``[lo, hi)`` (contiguous, else None) and its last group."""
    _, conv_h, _ = block.conv_shape
    out_h = block.out_shape[1]
    yr = pool_ranges(conv_h, out_h, None if block.pool is None else block.pool.axis(0))
    out = []
    for oy in range(out_h):
        cys = [cy for cy, (lo, hi) in enumerate(yr) if lo <= oy < hi]
        if not cys or cys != list(range(cys[0], cys[-1] + 1)):
            return None
        out.append((cys[0], cys[-1] + 1, cys[-1] // rows))
    return out


def _gather_out(block: Block, rows: int, ring: int, flips: list[int]) -> list[tuple[str, ...]]:
    """Per output byte: the statements writing it for output row ``oy`` (the OR of the conv rows'
    words from the ring, then bit ``s * ox`` of filter ``8n + b`` to bit ``b`` of pixel ``ox``)."""
    f_out = block.out_channels
    cbo = bits.bytes_per_pixel(f_out)
    out_w = block.out_shape[2]
    _, s_x, _ = _pool_shifts(None if block.pool is None else block.pool.axis(1))
    out = []
    for n in range(cbo):
        fs = list(range(8 * n, min(8 * n + 8, f_out)))
        stmts = [
            f"uint8_t *q = out + oy * {out_w * cbo} + {n};",
            "uint32_t " + ", ".join(f"v{f} = 0" for f in fs) + ";",
            "for (cy = cy_lo; cy < cy_hi; cy++) {",
        ]
        if rows == 2:
            stmts += [f"    const uint32_t *h = hw[(cy >> 1) & {ring - 1}];", "    const int sh = (cy & 1) << 4;"]
            stmts += [f"    v{f} |= h[{f}] >> sh;" for f in fs]
        else:
            stmts += [f"    const uint32_t *h = hw[cy & {ring - 1}];"] + [f"    v{f} |= h[{f}];" for f in fs]
        stmts.append("}")
        for ox in range(out_w):
            parts = [f"((v{f} >> {s_x * ox}) & 1u)" + (f" << {b}" if b else "") for b, f in enumerate(fs)]
            flip = f" ^ 0x{flips[n]:02x}u" if flips[n] else ""
            stmts.append(f"q[{ox * cbo}] = (uint8_t)(({' | '.join(parts)}){flip});")
        out.append(tuple(stmts))
    return out


def _group_bounds(
    block: Block, table: np.ndarray, row_cls: list[int], col_cls: list[int], n_col: int, rows: int
) -> tuple[tuple[int, ...], np.ndarray]:
    """Group classes (the border kinds of a group's rows) of every group, and per class, filter,
    row and column the ``bound + 1`` of the word kernel (-1: the group has no such row)."""
    _, conv_h, conv_w = block.conv_shape
    groups = -(-conv_h // rows)
    gkinds = [tuple(row_cls[rows * g + h] if rows * g + h < conv_h else -1 for h in range(rows)) for g in range(groups)]
    kinds = sorted(set(gkinds), key=gkinds.index)
    bounds = np.full((len(kinds), block.out_channels, rows, conv_w), -1, np.int64)
    for gc, kind in enumerate(kinds):
        for h, rk in enumerate(kind):
            if rk >= 0:
                bounds[gc, :, h] = table[[rk * n_col + c for c in col_cls]].T
    return tuple(kinds.index(k) for k in gkinds), bounds


def _weight_bits(block: Block) -> np.ndarray:
    """(F, taps) bool, tap ``t = (i * kw + j) * C + c``; the pad bits are 0 (bits.py)."""
    packed = block.packed_weights
    assert packed is not None
    (kh, kw), c_in = block.kernel, block.in_shape[0]
    wb = np.unpackbits(packed.reshape(block.out_channels, kh, kw, -1), axis=3, bitorder="little")[..., :c_in]
    return wb.reshape(block.out_channels, -1).astype(bool)


def _filters(
    block: Block, wb: np.ndarray, sb: int, bounds: np.ndarray, lanes: int, rows: int
) -> tuple[list[tuple[str, ...]], list[list[int]]]:
    """Every filter's statements (table reads numbered across filters) and the table's words."""
    lane_mask = sum(((1 << block.conv_shape[2]) - 1) << (lanes * h) for h in range(rows))
    pool_x = None if block.pool is None else block.pool.axis(1)
    filters: list[tuple[str, ...]] = []
    bound_cols: list[list[int]] = []
    for f in range(wb.shape[0]):
        lines, words = _filter(f, wb[f], sb, bounds[:, f], lanes, lane_mask, pool_x)
        filters.append(tuple(ln.replace("bq[", f"bq[{len(bound_cols)} + ") for ln in lines))
        bound_cols += words
    return filters, bound_cols


def sliced_kernel(
    block: Block, table: np.ndarray, row_cls: list[int], col_cls: list[int], n_col_classes: int, flips: list[int]
) -> SlicedPlan | None:
    """The bit-sliced plan of a binary conv block, or None when it does not apply (limits above).

    ``table``: ``bound + 1`` per (border class, filter) (class = row kind * n_col_classes + col
    kind); ``flips``: the output flip bytes.
    """
    layout = _layout(block) if block.kind == "bconv" and block.stride == (1, 1) else None
    out_rows = None if layout is None else _out_rows(block, layout[1])
    if layout is None or out_rows is None:
        return None
    lanes, rows = layout
    c_in, _, in_w = block.in_shape
    f_out, conv_h, _ = block.conv_shape
    (kh, kw), cb = block.kernel, bits.bytes_per_pixel(c_in)
    wb = _weight_bits(block)
    n_taps = kh * kw * c_in
    terms = int(np.minimum(wb.sum(axis=1), n_taps - wb.sum(axis=1)).sum())
    ring = 1 << (max((hi - 1) // rows - lo // rows for lo, hi, _ in out_rows)).bit_length()  # >= any row's span
    groups = -(-conv_h // rows)
    rw_rows = rows * groups + kh - 1
    stack = (4 // rows) * rw_rows * c_in + 4 * (n_taps + n_taps.bit_length() + ring * f_out)
    if terms > MAX_TERMS or f_out > 64 or stack > MAX_STACK_BYTES:
        return None
    window_sum, sb = _window_sum(n_taps)
    group_class, bounds = _group_bounds(block, table, row_cls, col_cls, n_col_classes, rows)
    filters, bound_cols = _filters(block, wb, sb, bounds, lanes, rows)
    return SlicedPlan(
        layout=f"{rows} conv row{'s' if rows > 1 else ''} of {lanes} lanes",
        rw_type="uint16_t" if lanes == 16 else "uint32_t",
        rows_per_word=rows,
        groups=groups,
        channels=c_in,
        rw_rows=rw_rows,
        transpose=tuple(_transpose(in_w, c_in, cb, block.padding[0], "(uint16_t)" if rows == 2 else "")),
        planes=tuple(_planes(block, rows)),
        n_planes=n_taps,
        window_sum=tuple(window_sum),
        n_sum=sb,
        filters=tuple(filters),
        bound_rows=tuple(
            ", ".join(f"0x{c[gc]:08x}u" for c in bound_cols) + "," for gc in range(len(bounds)) if bound_cols
        ),
        n_bound_words=len(bound_cols),
        group_class=group_class,
        n_group_classes=bounds.shape[0],
        out_rows=tuple(out_rows),
        ring=ring,
        ring_mask=ring - 1,
        gather_out=tuple(_gather_out(block, rows, ring, flips)),
        out_h=block.out_shape[1],
        uses_planes=any("pl[" in ln or "sp[" in ln for ln in sum(filters, ())),
        uses_sum=any("sp[" in ln for ln in sum(filters, ())),
    )
