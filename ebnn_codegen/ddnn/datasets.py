"""Multi-view datasets by name (:class:`~ebnn_codegen.data.multiview.MultiView`), with user
errors as :class:`~ebnn_codegen.data.DataError`.

Names are those of :data:`ebnn_codegen.data.DATASETS` (``mnist-tiles``,
``mvmc-like``, ...), plus ``mvmc-npz:PATH`` for the original MVMC ``.npz``
file (read with :func:`ebnn_codegen.data.load_mvmc_npz`; it has no split, so a
fixed permutation keeps 80 % for ``train`` and 20 % for ``test``, and samples
that no camera sees are dropped).

A per-view label outside ``0..K-1`` (``3`` = absent in the MVMC layout) marks
a view whose object is absent: it is ignored in that device's loss.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..data.errors import DataError
from ..data.multiview import MultiView

NPZ_PREFIX = "mvmc-npz:"
NPZ_SPLIT_SEED = 2017
NPZ_TRAIN_FRACTION = 0.8


def names() -> list[str]:
    from ..data import DATASETS

    return [*DATASETS, NPZ_PREFIX + "PATH"]


def load(name: str, split: str, n: int | None = None) -> MultiView:
    """Load split ``train`` or ``test`` of a multi-view dataset (the first ``n`` samples)."""
    from ..data import DATASETS

    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r} (train or test)")
    if n is not None and n < 1:
        raise DataError(f"the number of samples must be >= 1, got {n}")
    if not name.startswith(NPZ_PREFIX) and name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}", hint=f"choose one of {', '.join(names())}")
    try:
        d = _npz(name[len(NPZ_PREFIX) :], split, n) if name.startswith(NPZ_PREFIX) else DATASETS[name](split, n=n)
    except DataError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"dataset {name}: {first}") from None
    x, y_views, y = np.ascontiguousarray(d.x), np.asarray(d.y_views, np.int64), np.asarray(d.y, np.int64)
    return replace(d, x=x, y_views=y_views, y=y, name=name, split=split)


def _npz(path: str, split: str, n: int | None) -> MultiView:
    """The MVMC ``.npz``: a fixed permutation keeps 80 % for train, 20 % for test; samples no camera sees dropped."""
    from ..data import load_mvmc_npz

    x, y_views, y = load_mvmc_npz(path)
    keep = np.flatnonzero(y < 3)
    order = np.random.default_rng(NPZ_SPLIT_SEED).permutation(keep)
    cut = int(round(NPZ_TRAIN_FRACTION * len(order)))
    idx = np.sort(order[:cut] if split == "train" else order[cut:])
    if n is not None:
        idx = idx[:n]
    return MultiView(x[idx], y_views[idx], y[idx])
