"""Per-block kernels generated for the ``fast`` strategy (docs/speed.md).

For a hidden convolution block whose window is small, the compiler emits a
kernel specialised for the block's fixed weights instead of calling the
generic runtime kernel.  Python computes every number here; ``model.c.j2``
only lays the lists out.

* Every conv position is computed once.  Max-pooling followed by the
  threshold is the OR of the threshold bits over the pool window
  (``max(acc) >= t`` iff some ``acc >= t``), so each position's bits (one
  byte per 8 channels) are ORed into the output pixels whose window holds
  it, and the flips are XORed in at the end.  ``rows[cy] = (lo, hi, class)``
  and ``cols[cx]`` give the range of those outputs (``lo >= hi``: no window
  holds the position, it is skipped) and the border class.
* The window is gathered once into locals ``a0 .. a(K-1)`` shared by all
  filters: interior positions with constant offsets and no bounds checks,
  border positions with a check per tap and 0 for the padding.
* First block (uint8 pixels): ``acc = 2 * sum(x where w = +1) - S`` with the
  window sum ``S`` shared by all filters, or ``S - 2 * sum(x where w = -1)``,
  whichever list is shorter; the tap lists and the thresholds are immediates,
  and pairs of taps common to several filters' lists are summed once.
* Binary block: the weight bytes are immediates, ``m = sum popcount(a ^ w)``
  over the zero-filled window.  A padded tap (activation byte 0) adds
  ``popcount(w)`` mismatches instead of contributing 0 to ``acc``, so the
  threshold becomes a per-border-class bound on ``m``:
  ``acc >= t  <=>  m <= floor((n * C - t) / 2) + pad`` with ``n`` the taps
  inside and ``pad`` the popcount of the padded taps' weights; the table
  holds ``bound + 1`` (clamped to ``[0, 8K + 1]``) and the bit is ``m < bound``.
  On AVR each filter is one asm statement (``ldi r30, w; eor r30, a; lpm t, Z;
  add m, t``: 6 cycles a byte) with the popcount table's page in ``r31``.
  On 32-bit targets the window's bytes are packed into words (a single last
  byte looked up in the table), each filter's weights pre-packed in the same
  order (``wk``); SWAR counts and one multiply by 0x01010101 put ``m`` in the top
  byte, compared with ``bound << 24`` (immediates for the interior class).

Limits (else the generic runtime kernel is used): window of at most 64 bytes
(first block: ``C*kh*kw``, so the int16 sums cannot overflow) or 31 bytes
(binary block: ``8K + 1 <= 255``, so ``m`` and the bounds are bytes); conv
and output sides of at most 255; at most 64 filters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import bits
from ..ir import Block

MAX_U8_WINDOW = 64
MAX_BIN_WINDOW = 31
MAX_ASM_WINDOW = 28  # an asm statement takes at most 30 operands
MAX_SIDE = 255
MAX_FILTERS = 64


def _pool_ranges(n_conv: int, n_out: int, pool: tuple[int, int, int] | None) -> list[tuple[int, int]]:
    """For each conv position, the outputs [lo, hi) whose pool window holds it."""
    out = []
    for c in range(n_conv):
        if pool is None:
            lo, hi = c, min(c + 1, n_out)
        else:
            k, s, p = pool
            num = c + p - k + 1
            lo = 0 if num <= 0 else -(-num // s)
            hi = min((c + p) // s + 1, n_out)
        out.append((lo, max(lo, hi)))
    return out


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


def _share_pairs(lists: list[list[str]], limit: int = 8) -> list[dict[str, str]]:
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
        pairs.append({"name": name, "expr": f"{a} + {b}"})
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


def _word_count_expr(f: int, wbytes: np.ndarray, window: int) -> str:
    """C expression of ``m * 0x01010101`` (the mismatch count in its top byte, exact while the
    window has at most 31 bytes) for filter ``f``: XOR with the weight words ``kw[]``, 2-bit and
    4-bit sums per word (swar_nib), at most 3 words summed per nibble (<= 12), bytes folded
    (swar_fold); a single last byte ``t`` is looked up in the table."""
    words, last = _words(window)
    nw = len(words)
    terms = [f"swar_nib(w{j} ^ kw[{f * nw + j}], m1, m2)" for j in range(nw)]
    groups = [" + ".join(terms[i : i + 3]) for i in range(0, len(terms), 3)]
    total = " + ".join(f"swar_fold({g}, m4)" for g in groups)
    if last is not None:
        v = int(wbytes[last])
        # added to the lowest byte: the multiply sums the bytes anyway (every byte <= m <= 248)
        total += f" + (uint32_t)EBNN_READ_U8(ebnn_popcount8 + {f'(t ^ 0x{v:02x}u)' if v else 't'})"
    return f"({total}) * k1"


def _weight_words(packed: np.ndarray, window: int) -> list[str]:
    """The filters' weight words in the order of ``kw[]`` (word j of filter f at f * nw + j)."""
    words, _ = _words(window)
    vals = []
    for f in range(packed.shape[0]):
        for idx in words:
            vals.append(sum(int(packed[f, b]) << (8 * n) for n, b in enumerate(idx)))
    return [", ".join(f"0x{v:08x}u" for v in vals[i : i + 6]) + "," for i in range(0, len(vals), 6)]


def conv_kernel(block: Block, threshold: np.ndarray, flips: np.ndarray) -> dict[str, Any] | None:
    """The context of a generated kernel for ``block``, or None when the generic one is used.

    ``threshold`` and ``flips`` are the C form (out bit = (acc >= t) XOR flip).
    """
    if block.is_exit or block.kind == "blinear":
        return None
    c_in, h, w = block.in_shape
    f_out, conv_h, conv_w = block.conv_shape
    _, out_h, out_w = block.out_shape
    kh, kw = block.kernel
    sh, sw = block.stride
    ph, pw = block.padding
    first = block.is_first
    cb = 1 if first else bits.bytes_per_pixel(c_in)
    window = (c_in if first else 1) * kh * kw * (1 if first else cb)
    if window > (MAX_U8_WINDOW if first else MAX_BIN_WINDOW):
        return None
    if max(conv_h, conv_w, out_h, out_w) > MAX_SIDE or f_out > MAX_FILTERS:
        return None
    pool = block.pool
    rows_r = _pool_ranges(conv_h, out_h, None if pool is None else (pool.kernel[0], pool.stride[0], pool.padding[0]))
    cols_r = _pool_ranges(conv_w, out_w, None if pool is None else (pool.kernel[1], pool.stride[1], pool.padding[1]))
    row_valid = _valid_taps(conv_h, h, kh, sh, ph)
    col_valid = _valid_taps(conv_w, w, kw, sw, pw)
    row_cls, row_kinds = _classes(row_valid)
    col_cls, col_kinds = _classes(col_valid)
    cbo = bits.bytes_per_pixel(f_out)

    # the window, in the order of the packed weights: u8 (c, i, j); binary (i, j, byte)
    taps = []  # (name index, c, i, j, byte n)
    if first:
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    taps.append((c, i, j, 0))
    else:
        for i in range(kh):
            for j in range(kw):
                for n in range(cb):
                    taps.append((0, i, j, n))
    gather = []
    for k, (c, i, j, n) in enumerate(taps):
        if first:
            off = c * h * w + i * w + j
            border = f"({c} * {h} + y0 + {i}) * {w} + x0 + {j}"
        else:
            off = (i * w + j) * cb + n
            border = f"((y0 + {i}) * {w} + x0 + {j}) * {cb} + {n}"
        gather.append({"k": k, "i": i, "j": j, "offset": off, "border_index": border})

    filters = []
    if first:
        wbits = block.weights.reshape(f_out, -1) > 0  # (c, i, j) order
        s_max = 255 * window
        for f in range(f_out):
            plus = [int(k) for k in np.flatnonzero(wbits[f])]
            minus = [int(k) for k in np.flatnonzero(~wbits[f])]
            t = int(np.clip(int(threshold[f]), -(s_max + 1), s_max + 1))
            use_plus = len(plus) <= len(minus)
            filters.append(
                {
                    "f": f,
                    "byte": f // 8,
                    "mask": f"0x{1 << (f % 8):02x}u",
                    "t": t,
                    "plus": use_plus,
                    "terms": [f"a{k}" for k in (plus if use_plus else minus)],
                }
            )
        pairs = _share_pairs([f["terms"] for f in filters])
        for f in filters:
            sum_expr = " + ".join(f["terms"])
            if f["plus"]:
                f["acc"] = f"2 * ({sum_expr}) - s" if f["terms"] else "-s"
            else:
                f["acc"] = f"s - 2 * ({sum_expr})" if f["terms"] else "s"
        bounds_rows: list[str] = []
        bounds32_rows: list[str] = []
        interior_class = -1
    else:
        packed = block.packed_weights  # (F, kh*kw*cb) in window order
        pc = np.array([bin(v).count("1") for v in range(256)])
        tap_pc = pc[packed].reshape(f_out, kh, kw, cb).sum(axis=3)  # (F, kh, kw)
        bounds = []
        for rk in row_kinds:
            for ck in col_kinds:
                inside = np.outer(rk, ck)
                n_in = int(inside.sum())
                pad = (tap_pc * ~inside[None]).sum(axis=(1, 2))
                b = (n_in * c_in - threshold.astype(np.int64)) // 2 + pad + 1
                bounds.append(np.clip(b, 0, 8 * window + 1))
        table = np.stack(bounds).astype(np.uint8)  # (classes, F)
        bounds_rows = [", ".join(str(int(v)) for v in row) + "," for row in table]
        # 32-bit targets compare m * 0x01010101 (m in the top byte) with bound << 24
        bounds32_rows = [", ".join(f"0x{int(v) << 24:08x}u" for v in row) + "," for row in table]
        inner = (True,) * kh, (True,) * kw
        interior_class = (
            row_kinds.index(inner[0]) * len(col_kinds) + col_kinds.index(inner[1])
            if inner[0] in row_kinds and inner[1] in col_kinds
            else -1
        )
        for f in range(f_out):
            terms = [
                f"a{k}" if int(packed[f, k]) == 0 else f"(a{k} ^ 0x{int(packed[f, k]):02x}u)" for k in range(window)
            ]
            asm = []  # AVR: Z = (table page, a ^ w); 6 cycles a byte (ldi, eor, lpm, add)
            for k in range(window):
                v = int(packed[f, k])
                asm.append(f"ldi r30, {v}" if v else f"mov r30, %[a{k}]")
                if v:
                    asm.append(f"eor r30, %[a{k}]")
                asm.append("lpm %[t], Z")
                asm.append("mov %[m], %[t]" if k == 0 else "add %[m], %[t]")
            filters.append(
                {
                    "f": f,
                    "byte": f // 8,
                    "mask": f"0x{1 << (f % 8):02x}u",
                    "terms": terms,
                    "asm": asm,
                    "m_word": _word_count_expr(f, packed[f], window),
                    "bound32": "0"
                    if interior_class < 0 or int(table[interior_class, f]) == 0
                    else f"0x{int(table[interior_class, f]) << 24:08x}u",
                }
            )

    words_ctx = []
    if not first:
        for j, idx in enumerate(_words(window)[0]):
            parts = [f"(uint32_t)a{b}" if n == 0 else f"((uint32_t)a{b} << {8 * n})" for n, b in enumerate(idx)]
            words_ctx.append({"name": f"w{j}", "expr": " | ".join(parts)})
    flip_bytes = bits.pack_flags(flips)
    interior_y = [cy for cy in range(conv_h) if all(row_valid[cy])]
    return {
        "first": first,
        "pairs": pairs if first else [],
        "avr_asm": (not first) and window <= MAX_ASM_WINDOW,
        "window": window,
        "cbo": cbo,
        "bytes_out": [n for n in range(cbo)],
        "in_h": h,
        "in_w": w,
        "k_h": kh,
        "k_w": kw,
        "s_h": sh,
        "s_w": sw,
        "p_h": ph,
        "p_w": pw,
        "conv_h": conv_h,
        "conv_w": conv_w,
        "out_w": out_w,
        "out_pixels": out_h * out_w,
        "out_bytes": block.out_bytes,
        "max_y0": h - kh,
        "max_x0": w - kw,
        "has_interior": bool(interior_y),
        "rows": [f"{{ {lo}, {hi}, {cls} }}," for (lo, hi), cls in zip(rows_r, row_cls, strict=True)],
        "cols": [f"{{ {lo}, {hi}, {cls} }}," for (lo, hi), cls in zip(cols_r, col_cls, strict=True)],
        "n_col_classes": len(col_kinds),
        "n_classes": len(row_kinds) * len(col_kinds),
        "bounds_rows": bounds_rows,
        "bounds32_rows": bounds32_rows,
        "words": words_ctx,
        "interior_class": interior_class,
        "border_bounds": (not first) and (interior_class < 0 or len(row_kinds) * len(col_kinds) > 1),
        "tail": "" if first or _words(window)[1] is None else f"a{_words(window)[1]}",
        "wk_rows": [] if first else _weight_words(block.packed_weights, window),
        "gather": gather,
        "filters": filters,
        "flips": [{"byte": n, "value": f"0x{int(v):02x}u"} for n, v in enumerate(flip_bytes) if int(v) != 0],
    }
