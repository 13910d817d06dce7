"""Progress bars on stderr for long work (tqdm): a rate and an estimate of the time left.

The API is two calls::

    with progress.bar(total=n, desc="verify", unit="sample") as bar:
        for part in parts:
            ...
            bar.update(len(part))

    for item in progress.iterate(items, desc="train", unit="epoch"):
        ...

Bars are off unless a front end turns them on: the CLI calls :func:`configure` with its
``-q`` flag, so the Python API stays silent by default. When on, a bar is drawn only
when stderr is a terminal (no carriage-return noise in logs and pipes); the environment
variable ``EBNN_PROGRESS`` overrides that: ``1`` draws bars anyway (CI logs, tests),
``0`` never. ``-q`` wins over both.

Limits: bars are per process (one at a time reads best; nested bars are allowed and
stack); the estimate assumes a steady rate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: ``1``: draw bars even when stderr is not a terminal; ``0``: never draw them.
ENV = "EBNN_PROGRESS"

_state = {"on": False}


def configure(quiet: bool) -> None:
    """Turn bars on (``quiet=False``, what the CLI does) or off."""
    _state["on"] = not quiet


def active() -> bool:
    """Whether a bar would be drawn now (see the module documentation)."""
    if not _state["on"]:
        return False
    forced = os.environ.get(ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


def _tqdm(total: float | None, desc: str, unit: str, iterable: Iterable[Any] | None = None) -> tqdm:
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not active(),
        dynamic_ncols=True,
        mininterval=0.2,
        leave=True,
        smoothing=0.1,
    )


@contextmanager
def bar(total: float | None = None, desc: str = "", unit: str = "it") -> Iterator[tqdm]:
    """A bar to ``update(n)`` by hand; closed (its last state kept on screen) on exit."""
    t = _tqdm(total, desc, unit)
    try:
        yield t
    finally:
        t.close()


def iterate(items: Iterable[T], desc: str = "", unit: str = "it", total: float | None = None) -> Iterator[T]:
    """``items``, drawing a bar as they are consumed."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    t = _tqdm(total, desc, unit, items)
    try:
        yield from t
    finally:
        t.close()


def write(message: str) -> None:
    """A log line on stderr that does not break a bar being drawn."""
    if active():
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def note(message: str) -> None:
    """One line on stderr when bars are on (for single long steps a bar cannot measure)."""
    if active():
        tqdm.write(message, file=sys.stderr)


__all__ = ["ENV", "active", "bar", "configure", "iterate", "note", "write"]
