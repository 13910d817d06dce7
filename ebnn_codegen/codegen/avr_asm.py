"""AVR assembly of the generated kernels (docs/speed.md), as lines for ``__asm__`` statements.

The plans (:mod:`ebnn_codegen.codegen.kernels`) call these builders only when the target's
traits name the ``avr`` dialect (:mod:`ebnn_codegen.codegen.traits`); the template pastes the
lines and the register lists, it never computes them.

First block, one conv row (:func:`u8_row`): one statement loops over the row's positions.
``Z`` walks a zero-padded row buffer (the window's bytes are ``ldd`` at constant offsets into
fixed registers ``a0 .. a(K-1)``), ``X`` the row of conv output bytes (``st X+``).  Per position
the window sum ``S`` (16 bits) and the shared pair sums ``p<n>`` are computed once; per filter
``x = 2 * sum(terms) - S`` is compared with an immediate (``cpi``/``sbci``: ``x`` is r24:r25) and
the bit is set with ``bld`` from the T flag.  A ``plus`` filter's bit is ``x >= t``; a ``minus``
filter's (``S - 2 * sum >= t``) is ``x < 1 - t``.

With vertical stride 1 the buffer is a ring of ``kh`` rows per channel: each conv row copies one
new input row, and the statement of the row's phase (``cy % kh``) has the offsets of that phase
(at most :data:`MAX_RING_LINES` lines for all phases, else every conv row copies its ``kh`` rows).

Linear blocks and the exit (:func:`linear_plan`): the rows interleaved in groups of eight for
``ebnn_mismatch8_avr`` (the runtime), with uint16 bounds.

Limits (else no asm: the portable C is used): every value fits int16 (the u8 kernel's window is
at most 64 bytes: ``2 * 255 * 64``); the window's offsets in the buffer are at most 63 (``ldd``);
``K + cbo + 2`` registers plus 2 a pair sum fit r2..r21 (pairs that do not fit are expanded into
their taps); the row buffer and the pooled row fit :data:`U8_STACK` bytes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .. import bits
from .kernel_plan import BufRow, FlipByte, HPool, LinearAvrPlan, RingPhase, SharedSum, U8Filter

LOW, HIGH = 2, 21  # r2 .. r21 for the window, the output bytes, S and the pair sums
HI_REG = 22  # the high byte of a compare that keeps x
X_REG, N_REG = 24, 23  # x in r24:r25 (cpi/sbci), the position counter in r23 (ldi)
U8_STACK = 192  # bytes of stack for the row buffer, the conv row and the pooled row
MAX_HPOOL = 256  # conv bytes read by the unrolled pooling of one row
MAX_RING_LINES = 1024  # the ring's kh statements together (flash: about 2 bytes a line)
MAX_LDD = 63


def _reg(names: dict[str, int], term: str, byte: int = 0) -> str:
    return f"r{names[term] + byte}"


def _load(names: dict[str, int], dst: int, term: str) -> list[str]:
    if term.startswith("p"):
        return [f"movw r{dst}, {_reg(names, term)}"]
    return [f"mov r{dst}, {_reg(names, term)}", f"clr r{dst + 1}"]


def _add(names: dict[str, int], dst: int, term: str) -> list[str]:
    if term.startswith("p"):
        return [f"add r{dst}, {_reg(names, term)}", f"adc r{dst + 1}, {_reg(names, term, 1)}"]
    return [f"add r{dst}, {_reg(names, term)}", f"adc r{dst + 1}, __zero_reg__"]


def _expand(term: str, pairs: dict[str, SharedSum]) -> list[str]:
    if term not in pairs:
        return [term]
    return _expand(pairs[term].a, pairs) + _expand(pairs[term].b, pairs)


def _filters(names: dict[str, int], group: list[U8Filter], terms: list[str]) -> list[str]:
    """Filters with the same term list: ``x`` computed once, compared with each one's immediate
    (``cpi``/``sbci`` for the last one; ``cpi``/``ldi``/``cpc`` keeps ``x`` for the others)."""
    x, s = X_REG, names["s"]
    lines: list[str] = []
    if terms:
        lines += _load(names, x, terms[0])
        for t in terms[1:]:
            lines += _add(names, x, t)
        lines += [f"lsl r{x}", f"rol r{x + 1}"]
    else:
        lines += [f"clr r{x}", f"clr r{x + 1}"]
    lines += [f"sub r{x}, r{s}", f"sbc r{x + 1}, r{s + 1}"]
    for n, f in enumerate(group):
        c = (f.t if f.plus else 1 - f.t) & 0xFFFF
        lines.append(f"cpi r{x}, {c & 0xFF}")
        last = n == len(group) - 1
        lines += [f"sbci r{x + 1}, {c >> 8}"] if last else [f"ldi r{HI_REG}, {c >> 8}", f"cpc r{x + 1}, r{HI_REG}"]
        lines += ["brlt 2f" if f.plus else "brge 2f", f"bld {_reg(names, f'o{f.byte}')}, {f.f % 8}", "2:"]
    return lines


def _registers(window: int, cbo: int, pairs: tuple[SharedSum, ...]) -> tuple[dict[str, int], bool] | None:
    """Fixed registers of the window bytes, output bytes, S and (when they fit) the pair sums."""
    names = {f"a{k}": LOW + k for k in range(window)}
    names.update({f"o{n}": LOW + window + n for n in range(cbo)})
    nxt = LOW + window + cbo
    nxt += nxt % 2  # movw: pairs start at even registers
    names["s"] = nxt
    if nxt + 2 > HIGH + 1:
        return None
    keep = nxt + 2 + 2 * len(pairs) <= HIGH + 1
    for n, p in enumerate(pairs if keep else ()):
        names[p.name] = nxt + 2 + 2 * n
    return names, keep


def _window_sum(names: dict[str, int], window: int, pairs: list[SharedSum]) -> list[str]:
    """``S`` from the pair sum covering the most taps (computed before it) and the other taps."""
    by_name = {p.name: p for p in pairs}
    best = max(pairs, key=lambda p: len(_expand(p.name, by_name)), default=None)
    covered = set(_expand(best.name, by_name)) if best else set()
    rest = [f"a{k}" for k in range(window) if f"a{k}" not in covered]
    s = names["s"]
    lines = _load(names, s, best.name if best else rest.pop(0))
    for t in rest:
        lines += _add(names, s, t)
    return lines


def _gather(names: dict[str, int], geo: dict[str, Any], offsets: list[int]) -> tuple[list[str], list[str]]:
    """The loads before the loop and in it.  With stride 1 the window's columns but the last are
    moved one column left at the end of a position (``mov``: 1 cycle instead of 2 for ``ldd``),
    so a position loads only its last column."""
    taps = geo["gather"]
    load = [f"ldd r{names[f'a{g.k}']}, Z+{off}" for g, off in zip(taps, offsets, strict=True)]
    if geo["s_w"] != 1 or geo["k_w"] < 2:
        return [], load
    last = geo["k_w"] - 1
    pre = [line for g, line in zip(taps, load, strict=True) if g.j < last]
    body = [line for g, line in zip(taps, load, strict=True) if g.j == last]
    return pre, body


def _shift(names: dict[str, int], geo: dict[str, Any]) -> list[str]:
    if geo["s_w"] != 1 or geo["k_w"] < 2:
        return []
    where = {(g.c, g.i, g.j): names[f"a{g.k}"] for g in geo["gather"]}
    return [f"mov r{where[(c, i, j)]}, r{where[(c, i, j + 1)]}" for (c, i, j) in sorted(where) if j + 1 < geo["k_w"]]


def u8_row(
    geo: dict[str, Any], pairs: tuple[SharedSum, ...], filters: tuple[U8Filter, ...], offsets: list[int]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The lines of one conv row's statement and the registers it clobbers (empty: no asm)."""
    regs = _registers(geo["window"], geo["cbo"], pairs)
    if regs is None or max(offsets) > MAX_LDD or geo["s_w"] > MAX_LDD:
        return (), ()
    names, keep = regs
    by_name = {p.name: p for p in pairs}
    pre, body = _gather(names, geo, offsets)
    lines = [f"ldi r{N_REG}, {geo['conv_w']}", *pre, "1:", *body]
    lines += ["set", *[f"clr {_reg(names, f'o{n}')}" for n in range(geo["cbo"])]]
    for p in pairs if keep else ():
        lines += _load(names, names[p.name], p.a) + _add(names, names[p.name], p.b)
    lines += _window_sum(names, geo["window"], list(pairs) if keep else [])
    groups: dict[tuple[str, ...], list[U8Filter]] = {}
    for f in filters:
        terms = tuple(f.terms) if keep else tuple(t for term in f.terms for t in _expand(term, by_name))
        groups.setdefault(terms, []).append(f)
    for terms, group in groups.items():
        lines += _filters(names, group, list(terms))
    lines += [f"st X+, {_reg(names, f'o{n}')}" for n in range(geo["cbo"])]
    lines += _shift(names, geo)
    lines += [f"adiw r30, {geo['s_w']}", f"dec r{N_REG}", "breq 3f", "rjmp 1b", "3:"]
    used = sorted({v + b for k, v in names.items() for b in ((0, 1) if k == "s" or k.startswith("p") else (0,))})
    clobbers = tuple(f"r{r}" for r in [*used, HI_REG, N_REG, X_REG, X_REG + 1])
    return tuple(lines), clobbers


def u8_fields(geo: dict[str, Any], pairs: tuple[SharedSum, ...], filters: tuple[U8Filter, ...]) -> dict[str, Any]:
    """The AVR fields of a :class:`~.kernel_plan.U8KernelPlan` (``geo``: its geometry): the row
    statement over a buffer of ``C * kh`` rows of ``in_w + 2 * p_w`` bytes (zero-padded), or
    none when the statement or the buffers (:data:`U8_STACK`) do not fit."""
    k_h, k_w, wp = geo["k_h"], geo["k_w"], geo["in_w"] + 2 * geo["p_w"]
    channels = geo["window"] // (k_h * k_w)
    nrows, crow, hrow = channels * k_h, geo["conv_w"] * geo["cbo"], geo["out_w"] * geo["cbo"]
    if nrows * wp + crow + hrow > U8_STACK:
        return {}
    gather = tuple(replace(g, buf=(g.c * k_h + g.i) * wp + g.j) for g in geo["gather"])
    asm, clobbers = u8_row(geo, pairs, filters, [g.buf for g in gather])
    hpool = _hpool(geo)
    if not asm or sum(len(h.srcs) for h in hpool) > MAX_HPOOL:
        return {}
    ring: tuple[RingPhase, ...] = ()
    if geo["s_h"] == 1 and 1 < k_h and k_h * len(asm) <= MAX_RING_LINES:  # a ring: one copy a row
        rows = [[(g.c * k_h + (ph + g.i) % k_h) * wp + g.j for g in gather] for ph in range(k_h)]
        ring = tuple(RingPhase(ph, u8_row(geo, pairs, filters, offs)[0]) for ph, offs in enumerate(rows))
    return dict(
        avr_asm=asm,
        avr_clobbers=clobbers,
        avr_ring=ring,
        avr_channels=tuple(range(channels)),
        avr_u8=True,
        avr_nrows=nrows,
        avr_wp=wp,
        avr_crow=crow,
        avr_hrow=hrow,
        avr_buf_rows=tuple(BufRow(c * k_h + i, c, i) for c in range(channels) for i in range(k_h)),
        avr_hpool=hpool,
        gather=gather,
    )


def _hpool(geo: dict[str, Any]) -> tuple[HPool, ...]:
    """Each pooled byte of a row as the OR of the conv bytes whose range (``geo["cols"]``) holds it."""
    cbo = geo["cbo"]
    return tuple(
        HPool(ox * cbo + n, tuple(cx * cbo + n for cx, r in enumerate(geo["cols"]) if r.lo <= ox < r.hi))
        for ox in range(geo["out_w"])
        for n in range(cbo)
    )


MAX_LINEAR_TOTAL = 65534  # the counts and bounds are uint16


def linear_plan(
    packed: np.ndarray, total: int, threshold: np.ndarray | None = None, flips: np.ndarray | None = None
) -> LinearAvrPlan | None:
    """The interleaved rows of a binary linear block and, for a hidden block, its bounds (C form
    thresholds: the bit is ``(total - 2 m >= t) XOR flip``, so ``m < floor((total - t) / 2) + 1``,
    clamped to ``[0, total + 1]``); None when the counts could overflow uint16."""
    if total > MAX_LINEAR_TOTAL:
        return None
    f_out, n = packed.shape
    groups = -(-f_out // 8)
    rows = np.zeros((groups * 8, n), np.uint8)
    rows[:f_out] = packed
    inter = rows.reshape(groups, 8, n).transpose(0, 2, 1).reshape(groups, 8 * n)
    bound = np.zeros(groups * 8, np.int64)
    if threshold is not None:
        bound[:f_out] = np.clip((total - threshold.astype(np.int64)) // 2 + 1, 0, total + 1)
    hex_row = [", ".join(f"0x{int(v):02x}" for v in g[i : i + 16]) + "," for g in inter for i in range(0, 8 * n, 16)]
    per = -(-8 * n // 16)
    flip_bytes = [] if flips is None else [int(v) for v in bits.pack_flags(flips)]
    return LinearAvrPlan(
        groups=groups,
        n=n,
        w_rows=tuple(tuple(hex_row[g * per : (g + 1) * per]) for g in range(groups)),
        bounds_rows=()
        if threshold is None
        else tuple(", ".join(str(int(v)) for v in bound[i : i + 16]) + "," for i in range(0, len(bound), 16)),
        total=total,
        flips=tuple(FlipByte(k, f"0x{v:02x}u") for k, v in enumerate(flip_bytes) if v),
    )
