"""AVR binary conv kernel by rows (docs/speed.md): the plan fields of :class:`~.kernel_plan.BinKernelPlan`.

For each conv row the ``kh`` input rows are copied into a zero-padded buffer; one asm statement
walks a run of positions of one border class (a *segment*).  ``Y`` (saved and restored by the
statement) walks the buffer, the window's bytes are ``ldd`` at constant offsets into fixed
registers; ``r31`` holds the popcount table's page for the whole statement.  Per filter the
weight bytes are immediates (``ldi r30, w; eor r30, a; lpm; add``: 6 cycles a byte), then the
class's bound is loaded from SRAM (``ld r0, X+``), ``cp`` sets the carry when ``m < bound`` and
``rol`` shifts it into the output byte, so each byte's filters run from the highest to the lowest
and the bounds are stored in that order.  The output bytes are stored (``std``) into buffer
bytes that no later position of the row reads (columns below the stride), pooled along x from
there, and the left padding is zeroed again for the next row.

Limits (else the C kernel is used): ``K + cbo`` registers from r2 and the count in r16..r21 (r22..r25 stay free
for the compiler's operands), every buffer offset at most 63 (``ldd``/``std``), at least ``cbo``
free buffer bytes below the stride, the buffers within :data:`BIN_STACK` bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .kernel_plan import HPool, Segment

LOW, HIGH = 2, 21
BIN_STACK = 192
MAX_LDD = 63
MAX_HPOOL = 256
MAX_INNER = 256  # filters x window bytes: the interior class's own statement (flash)


def _filter_lines(reg_a: list[int], m: int, weights: list[int]) -> list[str]:
    lines: list[str] = []
    for k, w in enumerate(weights):
        lines += [f"ldi r30, {w}", f"eor r30, r{reg_a[k]}"] if w else [f"mov r30, r{reg_a[k]}"]
        lines += [f"lpm r{m}, Z"] if k == 0 else ["lpm r0, Z", f"add r{m}, r0"]
    return lines


def order(f_out: int) -> list[int]:
    """The filters in the statement's order: each output byte's filters from the highest down."""
    return [f for n in range(-(-f_out // 8)) for f in reversed(range(8 * n, min(8 * n + 8, f_out)))]


def _columns(
    taps: tuple[Any, ...], offsets: list[int], reg_a: list[int], k_w: int, slide: bool
) -> tuple[list[str], list[str], list[str]]:
    """Loads before the loop, in it, and the moves at the end of a position: sliding by one
    pixel, the window's columns but the last move one column left (``mov``, 1 cycle) and a
    position loads only its last column (``ldd``, 2 cycles)."""
    loads = [(g.j, f"ldd r{reg_a[g.k]}, Y+{off}") for g, off in zip(taps, offsets, strict=True)]
    if not slide or k_w < 2:
        return [], [line for _, line in loads], []
    where = {(g.i, g.j, g.n): reg_a[g.k] for g in taps}
    moves = [f"mov r{where[(i, j, n)]}, r{where[(i, j + 1, n)]}" for (i, j, n) in sorted(where) if j + 1 < k_w]
    return [line for j, line in loads if j < k_w - 1], [line for j, line in loads if j == k_w - 1], moves


def bin_row(
    packed: np.ndarray, geo: dict[str, Any], offsets: list[int], slots: list[int], bounds: list[int] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The statement's lines (``%[n]``: the segment's position count) and its clobbers; with
    ``bounds`` (one border class's, by filter) they are immediates (``cpi``) instead of SRAM."""
    f_out, window = packed.shape
    cbo = -(-f_out // 8)
    step = geo["s_w"] * geo["pixel_bytes"]
    reg_a = [LOW + k for k in range(window)]
    reg_o = [LOW + window + n for n in range(cbo)]
    m = max(LOW + window + cbo, 16)  # cpi: an upper register
    pre, body, moves = _columns(geo["gather"], offsets, reg_a, geo["k_w"], geo["s_w"] == 1)
    lines = ["push r28", "push r29", "movw r28, r26", "movw r26, r30", "ldi r31, hi8(ebnn_popcount8)", *pre, "1:"]
    lines += body
    lines += [f"clr r{r}" for r in reg_o]
    for f in order(f_out):
        lines += _filter_lines(reg_a, m, [int(v) for v in packed[f]])
        lines += [f"cpi r{m}, {bounds[f]}"] if bounds is not None else ["ld r0, X+", f"cp r{m}, r0"]
        lines.append(f"rol r{reg_o[f // 8]}")
    lines += [f"std Y+{slots[n]}, r{reg_o[n]}" for n in range(cbo)]
    lines += moves
    lines += [f"subi r26, {f_out}", "sbci r27, 0"] if bounds is None else []
    lines += [f"subi r28, {(-step) & 0xFF}", f"sbci r29, {((-step) >> 8) & 0xFF}"]
    lines += ["dec %[n]", "breq 3f", "rjmp 1b", "3:", "pop r29", "pop r28"]
    clobbers = tuple(f"r{r}" for r in [*reg_a, *reg_o, m])
    return tuple(lines), clobbers


def _segments(cols: tuple[Any, ...], step: int) -> tuple[Segment, ...]:
    """Runs of consecutive columns of one class (at most 255 a run)."""
    segs: list[Segment] = []
    for cx, r in enumerate(cols):
        if segs and segs[-1].cls == r.cls and segs[-1].count < 255:
            segs[-1] = Segment(segs[-1].cx0, segs[-1].count + 1, r.cls, segs[-1].offset)
        else:
            segs.append(Segment(cx, 1, r.cls, cx * step))
    return tuple(segs)


def bin_fields(geo: dict[str, Any], packed: np.ndarray, table: np.ndarray, inner: int) -> dict[str, Any]:
    """The AVR row fields of a binary kernel plan (``table``: the bounds, classes x filters;
    ``inner``: the interior class, -1 if none), or none when the limits of the module docstring
    are not met.  The interior class gets a second statement with its bounds as immediates when
    the filters' code is small (at most :data:`MAX_INNER` taps)."""
    f_out, window = packed.shape
    cbo, cb, kh, kw, s_w = geo["cbo"], geo["pixel_bytes"], geo["k_h"], geo["k_w"], geo["s_w"]
    wp = (geo["in_w"] + 2 * geo["p_w"]) * cb
    offsets = [(g.i * wp // cb + g.j) * cb + g.n for g in geo["gather"]]
    slots = [(i * wp // cb + j) * cb + n for i in range(kh) for j in range(min(s_w, kw)) for n in range(cb)][:cbo]
    step = s_w * cb
    hrow = geo["out_w"] * cbo
    fits = max(LOW + window + cbo, 16) <= HIGH and len(slots) == cbo and max(offsets + slots) <= MAX_LDD
    if not fits or kh * wp + f_out + hrow > BIN_STACK:
        return {}
    hpool = tuple(
        HPool(ox * cbo + n, tuple(cx * step + slots[n] for cx, r in enumerate(geo["cols"]) if r.lo <= ox < r.hi))
        for ox in range(geo["out_w"])
        for n in range(cbo)
    )
    if sum(len(h.srcs) for h in hpool) > MAX_HPOOL:
        return {}
    lines, clobbers = bin_row(packed, geo, offsets, slots)
    inner_ok = inner >= 0 and f_out * window <= MAX_INNER
    inner_lines = bin_row(packed, geo, offsets, slots, [int(v) for v in table[inner]])[0] if inner_ok else ()
    segments = _segments(geo["cols"], step)
    perm = order(f_out)
    return dict(
        avr_row=True,
        avr_asm_row=lines,
        avr_asm_inner=inner_lines,
        avr_inner_cls=inner,
        avr_clobbers=clobbers,
        avr_wp=wp,
        avr_pad=geo["p_w"] * cb,
        avr_segments=segments,
        avr_nseg=len(segments),
        avr_hpool=hpool,
        avr_hrow=hrow,
        avr_bounds_rows=tuple(", ".join(str(int(v)) for v in row[perm]) + "," for row in table),
    )
