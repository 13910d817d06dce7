"""Multi-view datasets by name, with user errors as :class:`DatasetError`.

Names are those of :data:`ebnn_codegen.data.DATASETS` (``mnist-tiles``,
``mvmc-like``, ...), plus ``mvmc-npz:PATH`` for the original MVMC ``.npz``
file (read with :func:`ebnn_codegen.data.load_mvmc_npz`; it has no split, so a
fixed permutation keeps 80 % for ``train`` and 20 % for ``test``, and samples
that no camera sees are dropped).

A per-view label outside ``0..K-1`` (``3`` = absent in the MVMC layout) marks
a view whose object is absent: it is ignored in that device's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CodegenError

NPZ_PREFIX = "mvmc-npz:"
NPZ_SPLIT_SEED = 2017
NPZ_TRAIN_FRACTION = 0.8


class DatasetError(CodegenError):
    """A dataset name is unknown, or its data cannot be found or read."""


@dataclass
class MultiView:
    name: str
    split: str
    x: np.ndarray  # uint8 (N, D, C, H, W)
    y_views: np.ndarray  # int64 (N, D)
    y: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray | slice) -> MultiView:
        return MultiView(self.name, self.split, self.x[index], self.y_views[index], self.y[index])

    @property
    def raw_bytes_per_sample(self) -> int:
        """Bytes of uploading every view as uint8 pixels (the raw-upload baseline)."""
        return int(np.prod(self.x.shape[1:]))


def names() -> list[str]:
    from ..data import DATASETS

    return [*DATASETS, NPZ_PREFIX + "PATH"]


def load(name: str, split: str, n: int | None = None) -> MultiView:
    """Load split ``train`` or ``test`` of a multi-view dataset (the first ``n`` samples)."""
    from ..data import DATASETS, DataError, load_mvmc_npz

    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r} (train or test)")
    if n is not None and n < 1:
        raise DatasetError(f"the number of samples must be >= 1, got {n}")
    try:
        if name.startswith(NPZ_PREFIX):
            x, y_views, y = load_mvmc_npz(name[len(NPZ_PREFIX) :])
            keep = np.flatnonzero(y < 3)
            order = np.random.default_rng(NPZ_SPLIT_SEED).permutation(keep)
            cut = int(round(NPZ_TRAIN_FRACTION * len(order)))
            idx = np.sort(order[:cut] if split == "train" else order[cut:])
            if n is not None:
                idx = idx[:n]
            return MultiView(name, split, x[idx], y_views[idx], y[idx])
        if name not in DATASETS:
            raise DatasetError(f"unknown dataset {name!r}", hint=f"choose one of {', '.join(names())}")
        d = DATASETS[name](split, n=n)
    except DataError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"dataset {name}: {first}") from None
    return MultiView(name, split, np.ascontiguousarray(d.x), np.asarray(d.y_views, np.int64), np.asarray(d.y, np.int64))
