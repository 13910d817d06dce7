"""Bit-sliced arithmetic emitted as straight-line C (the 32-bit conv kernel of :mod:`.sliced`).

A *plane* is a uint32_t whose 32 bits are 32 lanes; a count is a plane per binary digit.  Each
value carries a polarity (True: the C variable holds its complement), so the complemented taps
of a filter (constants of the model) cost no instruction: :meth:`Emitter.full_add` picks the
adder form that absorbs them.  :func:`count` sums weighted planes by carry-save (3-to-2) steps of
5 logic operations; :func:`compare` gives the lanes where a count is below per-lane constants.
tests/test_sliced.py evaluates both on random words against integer sums.
"""

from __future__ import annotations

import re

import numpy as np

Value = tuple[str, bool]  # (C name, complemented)


class Emitter:
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

    def full_add(self, x: Value, y: Value, z: Value) -> tuple[Value, Value]:
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

    def half_add(self, x: Value, y: Value) -> tuple[Value, Value]:
        (a, pa), (b, pb) = x, y
        s = self.new(f"{a} ^ {b}")
        if pa and pb:
            return (s, False), (self.new(f"{a} | {b}"), True)
        if pa:
            return (s, True), (self.new(f"{b} & ~{a}"), False)
        if pb:
            return (s, True), (self.new(f"{a} & ~{b}"), False)
        return (s, False), (self.new(f"{a} & {b}"), False)


def count(em: Emitter, inputs: list[tuple[int, str, bool]]) -> dict[int, Value]:
    """Sum of weighted planes ``(level, expr, polarity)`` (weight ``2**level``) as one plane a
    level.  Streaming carry-save: a level holding three values is reduced at once, so at most
    two values a level are live."""
    levels: dict[int, list[Value]] = {}

    def push(level: int, val: Value) -> None:
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


def compare(em: Emitter, v: dict[int, Value], planes: np.ndarray, care: int, bound_words: list[list[int]]) -> str:
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
