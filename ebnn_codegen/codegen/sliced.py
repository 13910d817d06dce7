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
  along y, the OR of the rows of each output row; then the bits are moved to the packed output
  bytes and the flips XORed in.

Limits (else the word-wide kernel of :mod:`.kernels` is used): stride 1; the lanes and the pool's
reach fit 16 (or 32) bits, checked lane by lane against :func:`~ebnn_codegen.ir.pool_ranges`; at
most :data:`MAX_TERMS` plane terms over all filters (the code is straight-line per filter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .. import bits
from ..ir import Block, pool_ranges

MAX_TERMS = 4096
MAX_STACK_BYTES = 8192


@dataclass(frozen=True)
class SlicedPlan:
    """Everything the template lays out; C statements are carried ready-made."""

    lanes: int  # 16: two conv rows a word; 32: one
    layout: str  # for the comment: "2 conv rows of 16 lanes"
    rw_type: str  # the transposed rows: uint16_t (16 lanes) or uint32_t
    rows_per_word: int
    groups: int
    channels: int
    rw_rows: int
    transpose: tuple[str, ...]  # statements of the per-row transposition loop body
    planes: tuple[str, ...]  # statements filling pl[] for group g (``r`` points at rw[rows_per_word * g])
    n_planes: int
    window_sum: tuple[str, ...]  # the S counter: statements storing sp[]
    n_sum: int
    filters: tuple[tuple[str, ...], ...]  # per filter: statements ending in hw[slot][f] = ...
    bound_rows: tuple[str, ...]  # the bound planes table, one row per group class (may be empty)
    n_bound_words: int
    group_class: tuple[int, ...]
    n_group_classes: int
    out_rows: tuple[tuple[int, int, int], ...]  # conv rows [lo, hi) of each output row, its last group
    ring: int  # groups kept in hw (a power of 2)
    ring_mask: int
    gather_out: tuple[tuple[str, ...], ...]  # per output byte n: the statements of one output row
    out_h: int
    out_w: int
    cbo: int
    stack_bytes: int  # the kernel's arrays (the frame adds the spills)
    terms: int  # plane terms over all filters (the straight-line code's size)


class _Emitter:
    """Straight-line C over uint32_t values with a polarity (True: the variable holds ~value)."""

    def __init__(self, prefix: str) -> None:
        self.stmts: list[tuple[str | None, str]] = []  # (defined name or None, statement)
        self.n = 0
        self.prefix = prefix

    def new(self, expr: str, order: bool = False) -> str:
        name = f"{self.prefix}{self.n}"
        self.n += 1
        self.stmts.append((name, f"const uint32_t {name} = {expr};"))
        if order:  # a scheduling barrier: the adders stay in the order written (few live values)
            self.stmts.append((name, "EBNN_ORDER();"))
        return name

    def emit(self, stmt: str) -> None:
        self.stmts.append((None, stmt))

    def lines(self) -> list[str]:
        """The statements, less the values nothing uses (e.g. bits the compare never reads)."""
        used: set[str] = set()
        keep = []
        for name, stmt in reversed(self.stmts):
            if name is not None and name not in used:
                continue
            if name is None or not stmt.startswith("EBNN_ORDER"):
                used.update(re.findall(rf"\b{self.prefix}\d+\b", stmt.split("=", 1)[-1]))
            keep.append(stmt)
        return keep[::-1]

    def full_add(
        self, x: tuple[str, bool], y: tuple[str, bool], z: tuple[str, bool]
    ) -> tuple[tuple[str, bool], tuple[str, bool]]:
        """A 3-to-2 carry-save step: (sum, carry) of three planes, 5 operations whatever the
        polarities (maj and xor of complements are complements; one complemented input x gives
        maj(~x, y, z) = x ^ ((x ^ y) | (x ^ z)))."""
        vals = [x, y, z]
        flip = sum(p for _, p in vals) >= 2
        if flip:
            vals = [(v, not p) for v, p in vals]
        vals.sort(key=lambda t: not t[1])  # a complemented one first
        (a, pa), (b, _), (c, _) = vals
        u = self.new(f"{a} ^ {b}")
        s = self.new(f"{u} ^ {c}", order=True)
        if pa:
            v = self.new(f"{a} ^ {c}")
            carry = self.new(f"{a} ^ ({u} | {v})")
        else:
            carry = self.new(f"({a} & {b}) | ({u} & {c})")
        return (s, pa != flip), (carry, flip)

    def half_add(self, x: tuple[str, bool], y: tuple[str, bool]) -> tuple[tuple[str, bool], tuple[str, bool]]:
        (a, pa), (b, pb) = x, y
        s = self.new(f"{a} ^ {b}")
        if pa and pb:
            return (s, False), (self.new(f"{a} | {b}"), True)
        if pa:
            return (s, True), (self.new(f"{b} & ~{a}"), False)
        if pb:
            return (s, True), (self.new(f"{a} & ~{b}"), False)
        return (s, False), (self.new(f"{a} & {b}"), False)


def _count(em: _Emitter, inputs: list[tuple[int, str, bool]]) -> dict[int, tuple[str, bool]]:
    """Sum of weighted planes ``(level, expr, polarity)`` (weight ``2**level``) as one plane a
    level.  Streaming carry-save: a level holding three values is reduced at once, so at most
    two values a level are live."""
    levels: dict[int, list[tuple[str, bool]]] = {}

    def push(level: int, val: tuple[str, bool]) -> None:
        lst = levels.setdefault(level, [])
        lst.append(val)
        if len(lst) == 3:
            s, c = em.full_add(*lst)
            levels[level] = [s]
            push(level + 1, c)

    for level, expr, pol in inputs:
        push(level, (em.new(expr), pol))
    level = 0
    while level <= max(levels, default=-1):
        lst = levels.get(level, [])
        if len(lst) == 2:
            s, c = em.half_add(*lst)
            levels[level] = [s]
            push(level + 1, c)
        level += 1
    return {k: v[0] for k, v in levels.items() if v}


def _compare(
    em: _Emitter, v: dict[int, tuple[str, bool]], planes: np.ndarray, care: int, bound_words: list[list[int]]
) -> str:
    """``lt = V < B'`` LSB first: ``lt = maj(~v_k, b_k, lt)``.  ``planes``: (group classes, K)
    words of ``B'``; a word equal in every class (on the ``care`` lanes) is an immediate, else it
    is read from the table row of the group (``bq[n]``, appended to ``bound_words``)."""
    lt = ""
    for k in range(planes.shape[1]):
        col = [int(w) & care for w in planes[:, k]]
        if k in v:
            name, pol = v[k]
            nv = name if pol else f"~{name}"
        else:
            nv = ""  # all ones
        if all(w == 0 for w in col):
            if not lt:
                continue
            lt = em.new(f"{nv} & {lt}") if nv else lt
        elif all(w == care for w in col):
            lt = em.new(f"{nv} | {lt}" if lt and nv else "0xffffffffu" if not nv else nv)
        else:
            if len(set(col)) == 1:
                b = f"0x{col[0]:08x}u"
            else:
                b = f"bq[{len(bound_words)}]"
                bound_words.append(col)
            if not lt:
                lt = em.new(f"{nv} & {b}" if nv else b)
            elif not nv:
                lt = em.new(f"{b} | {lt}")
            else:
                lt = em.new(f"({nv} & {b}) | (({nv} | {b}) & {lt})")
    higher = [k for k in v if k >= planes.shape[1]]
    for k in sorted(higher):  # V has bits above B': they must be 0
        name, pol = v[k]
        if lt:
            lt = em.new(f"{lt} & {name}" if pol else f"{lt} & ~{name}")
    return lt or "0u"


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


def sliced_kernel(
    block: Block, table: np.ndarray, row_cls: list[int], col_cls: list[int], n_col_classes: int, flips: list[int]
) -> SlicedPlan | None:
    """The bit-sliced plan of a binary conv block, or None when it does not apply (limits above).

    ``table``: ``bound + 1`` per (border class, filter) (class = row kind * n_col_classes + col kind).
    """
    if block.is_first or block.kind != "bconv" or block.stride != (1, 1):
        return None
    c_in, in_h, in_w = block.in_shape
    f_out, conv_h, conv_w = block.conv_shape
    _, out_h, out_w = block.out_shape
    (kh, kw), (ph, pw) = block.kernel, block.padding
    pool = block.pool
    pool_y = None if pool is None else pool.axis(0)
    pool_x = None if pool is None else pool.axis(1)
    cb = bits.bytes_per_pixel(c_in)
    cbo = bits.bytes_per_pixel(f_out)
    # Lane layout: two rows of 16 lanes, else one row of 32.
    for lanes, rows in ((16, 2), (32, 1)):
        reach = max(conv_w + kw - 1 - pw, in_w + pw)  # bits of the plane words a half may touch
        if reach <= lanes and _lane_check(conv_w, out_w, pool_x, lanes, rows):
            break
    else:
        return None
    packed = block.packed_weights
    assert packed is not None
    wb = np.unpackbits(packed.reshape(f_out, kh, kw, cb), axis=3, bitorder="little")  # (F, kh, kw, 8cb)
    if wb[..., c_in:].any():  # pragma: no cover - pad bits are 0 by the layout (bits.py)
        return None
    wb = wb[..., :c_in].reshape(f_out, -1).astype(bool)  # tap t = (i * kw + j) * C + c
    n_taps = kh * kw * c_in
    n1 = wb.sum(axis=1)
    terms = int(np.minimum(n1, n_taps - n1).sum())
    groups = -(-conv_h // rows)
    rw_rows = rows * groups + kh - 1
    if terms > MAX_TERMS or f_out > 64:
        return None

    transpose = _transpose(in_w, c_in, cb, ph, "(uint16_t)" if rows == 2 else "")

    # Planes of group g: r = rw + rows * g; the lower half's row is conv row rows * g.
    planes = []
    for i in range(kh):
        for c in range(c_in):
            q = f"q{i}_{c}"
            if rows == 2:
                planes.append(f"const uint32_t {q} = r[{i * c_in + c}] | ((uint32_t)r[{(i + 1) * c_in + c}] << 16);")
            else:
                planes.append(f"const uint32_t {q} = r[{i * c_in + c}];")
            for j in range(kw):
                d = j - pw
                expr = q if d == 0 else f"{q} >> {d}" if d > 0 else f"{q} << {-d}"
                planes.append(f"pl[{(i * kw + j) * c_in + c}] = {expr};")

    em = _Emitter("s")
    s_levels = _count(em, [(0, f"pl[{t}]", False) for t in range(n_taps)])
    sb = max(s_levels) + 1
    assert all(not p for _, p in s_levels.values())
    for k in range(sb):
        em.emit(f"sp[{k}] = {s_levels[k][0]};" if k in s_levels else f"sp[{k}] = 0u;")
    window_sum = em.lines()

    # Group classes: the border kinds of the group's rows (-1: no such conv row).
    gkinds = [tuple(row_cls[rows * g + h] if rows * g + h < conv_h else -1 for h in range(rows)) for g in range(groups)]
    kinds = sorted(set(gkinds), key=gkinds.index)
    group_class = tuple(kinds.index(k) for k in gkinds)
    lane_mask = 0
    for h in range(rows):
        lane_mask |= ((1 << conv_w) - 1) << (lanes * h)

    filters = []
    bound_cols: list[list[int]] = []
    for f in range(f_out):
        em = _Emitter("t")
        em.emit(f"/* filter {f} */")
        use_ones = n1[f] <= n_taps - n1[f]
        taps = np.flatnonzero(wb[f] if use_ones else ~wb[f])
        inputs = [(1, f"pl[{int(t)}]", bool(use_ones)) for t in taps]
        inputs += [(k, f"sp[{k}]", not use_ones) for k in range(sb)]
        if use_ones:
            offset, vmax = int(n1[f]), n_taps + 2 * int(n1[f])
        else:
            offset, vmax = (1 << sb) - 1 - int(n1[f]), 2 * (n_taps - int(n1[f])) + (1 << sb) - 1
        v = _count(em, inputs)
        # B' per lane and group class.
        bvals = np.zeros((len(kinds), 32), np.int64)
        for gc, gk in enumerate(kinds):
            for h, rk in enumerate(gk):
                if rk < 0:
                    continue
                for x in range(conv_w):
                    b = int(table[rk * n_col_classes + col_cls[x], f]) + offset
                    bvals[gc, lanes * h + x] = min(max(b, 0), vmax + 1)
        nbits = max(int(bvals.max()).bit_length(), 1)
        bplanes = np.zeros((len(kinds), nbits), np.int64)
        for k in range(nbits):
            bplanes[:, k] = ((bvals >> k) & 1) @ (np.int64(1) << np.arange(32, dtype=np.int64))
        care_words: list[list[int]] = []
        lt = _compare(em, v, bplanes, lane_mask, care_words)
        k, s, p = _pool_shifts(pool_x)
        r = f"({lt} & 0x{lane_mask:08x}u)"
        if k == 1:
            h_expr = r
        else:
            g = em.new(f"{r} << {p}" if p else r)
            h_expr = " | ".join([g] + [f"({g} >> {d})" for d in range(1, k)])
        em.emit(f"hw[slot][{f}] = {h_expr};")
        base = len(bound_cols)
        filters.append(tuple(ln.replace("bq[", f"bq[{base} + ") for ln in em.lines()))
        bound_cols += care_words

    bound_rows = (
        tuple(", ".join(f"0x{col[gc]:08x}u" for col in bound_cols) + "," for gc in range(len(kinds)))
        if bound_cols
        else ()
    )

    # Output rows: the conv rows of each (contiguous), then the bits into the packed bytes.
    yr = pool_ranges(conv_h, out_h, pool_y)
    out_rows = []
    for oy in range(out_h):
        cys = [cy for cy, (lo, hi) in enumerate(yr) if lo <= oy < hi]
        if not cys or cys != list(range(cys[0], cys[-1] + 1)):
            return None
        out_rows.append((cys[0], cys[-1] + 1, cys[-1] // rows))
    _, s_x, _ = _pool_shifts(pool_x)
    # hw is a ring of the last groups: an output row is written after its last group, and no
    # output row spans more groups than the ring holds.
    span = max(hi // rows - lo // rows + 1 for lo, hi, _ in ((a, b - 1, c) for a, b, c in out_rows))
    ring = 1 << (span - 1).bit_length()
    gather_out = []
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
            e = s_x * ox
            parts = [f"((v{f} >> {e}) & 1u)" + (f" << {b}" if b else "") for b, f in enumerate(fs)]
            flip = f" ^ 0x{flips[n]:02x}u" if flips[n] else ""
            stmts.append(f"q[{ox * cbo}] = (uint8_t)(({' | '.join(parts)}){flip});")
        gather_out.append(tuple(stmts))
    stack = (4 // rows) * rw_rows * c_in + 4 * (n_taps + sb + ring * f_out)
    if stack > MAX_STACK_BYTES:
        return None
    return SlicedPlan(
        ring=ring,
        ring_mask=ring - 1,
        lanes=lanes,
        layout=f"{rows} conv row{'s' if rows > 1 else ''} of {lanes} lanes",
        rw_type="uint16_t" if lanes == 16 else "uint32_t",
        rows_per_word=rows,
        groups=groups,
        channels=c_in,
        rw_rows=rw_rows,
        transpose=tuple(transpose),
        planes=tuple(planes),
        n_planes=n_taps,
        window_sum=tuple(window_sum),
        n_sum=sb,
        filters=tuple(filters),
        bound_rows=bound_rows,
        n_bound_words=len(bound_cols),
        group_class=group_class,
        n_group_classes=len(kinds),
        out_rows=tuple(out_rows),
        gather_out=tuple(gather_out),
        out_h=out_h,
        out_w=out_w,
        cbo=cbo,
        stack_bytes=stack,
        terms=terms,
    )
