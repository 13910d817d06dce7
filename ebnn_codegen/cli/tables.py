"""Aligned plain-text tables for the CLI's human output (``--json`` keeps every field).

:func:`render` prints a flat dict as ``key  value`` lines with the values aligned, a
nested dict as an indented block, and a list of dicts as a table with one column per
key (numbers right-aligned, integers with thousands separators).
"""

from __future__ import annotations

from typing import Any


def cell(value: Any) -> str:
    """One value as text: 12,345 for integers and floats from 1,000 up, 4 significant digits below."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return (
            "x".join(cell(v) for v in value) if all(isinstance(v, int) for v in value) else ", ".join(map(str, value))
        )
    return str(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(rows: list[dict[str, Any]], indent: str = "") -> list[str]:
    """Rows of dicts as an aligned table (the columns of the first row, in order)."""
    if not rows:
        return []
    cols = list(rows[0])
    for r in rows[1:]:
        cols += [k for k in r if k not in cols]
    text = [[cell(r.get(c)) for c in cols] for r in rows]
    width = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    right = [all(_numeric(r.get(c)) or r.get(c) is None for r in rows) for c in cols]

    def line(values: list[str]) -> str:
        return indent + "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, width, right)).rstrip()

    return [line(cols), line(["-" * w for w in width]), *(line(t) for t in text)]


def render(data: dict[str, Any], indent: str = "") -> str:
    """A dict as aligned ``key  value`` lines, nested dicts indented, lists of dicts as tables."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list)) or _flat_list(v)}
    width = max((len(k) for k in scalars), default=0)
    lines = [f"{indent}{k.ljust(width)}  {cell(v)}" for k, v in scalars.items()]
    for k, v in data.items():
        if k in scalars:
            continue
        lines.append(f"{indent}{k}:")
        if isinstance(v, dict):
            lines.append(render(v, indent + "  ") if v else indent + "  -")
        else:
            lines += table([r if isinstance(r, dict) else {"value": r} for r in v], indent + "  ")
    return "\n".join(lines)


def _flat_list(v: Any) -> bool:
    return isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v)


__all__ = ["cell", "render", "table"]
