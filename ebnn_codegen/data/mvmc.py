"""Loader for the original MVMC multi-view multi-camera dataset file.

MVMC holds objects seen by 6 synchronised cameras as 32x32 RGB crops.  Its
``.npz`` file has two arrays:

``X``
    ``N x 6 x 3 x 32 x 32`` images, either ``uint8`` (0..255) or floating point
    (0..1, or 0..255 if any value exceeds 1).
``y``
    ``N x 6`` per-camera labels: 0, 1, 2 for the classes (car, bus, person)
    and :data:`ABSENT` (3) where the camera does not see the object (its image
    is all zero).

The file is not distributed with this project; users who own it can load it
with :func:`load_mvmc_npz`.
"""

from __future__ import annotations

import os
import zipfile
from typing import Union

import numpy as np

from .errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

#: Per-view label of a camera that does not see the object.
ABSENT = 3
#: Number of object classes (car, bus, person).
NUM_CLASSES = 3
#: Shape of one sample's views: cameras x channels x height x width.
VIEW_SHAPE = (6, 3, 32, 32)


class MvmcFormatError(DataError, ValueError):
    """Raised when an MVMC ``.npz`` file does not have the expected layout."""


def object_labels(y_views: np.ndarray, absent: int = ABSENT) -> np.ndarray:
    """Object label per sample: the largest per-view label that is not ``absent``.

    Samples that no view sees get ``absent`` as their object label; callers that
    need a pure 3-class problem can drop them with ``y != ABSENT``.

    Args:
        y_views: integer labels ``N x V``.
        absent: the "absent" label value.

    Returns:
        ``int64`` labels ``N``.
    """
    y_views = np.asarray(y_views, dtype=np.int64)
    masked = np.where(y_views == absent, -1, y_views)
    y = masked.max(axis=1) if y_views.shape[1] else np.full(len(y_views), -1)
    return np.where(y < 0, absent, y).astype(np.int64)


def _to_uint8(x: np.ndarray, path: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise MvmcFormatError(f"{path}: 'X' contains NaN or infinite values")
        scale = 255.0 if x.size and float(x.max()) <= 1.0 else 1.0
        values = np.round(x.astype(np.float64) * scale)
    elif x.dtype.kind in "iu":
        values = x.astype(np.int64)
    else:
        raise MvmcFormatError(f"{path}: 'X' has unsupported dtype {x.dtype}")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise MvmcFormatError(f"{path}: 'X' values fall outside 0..255 after scaling")
    return np.ascontiguousarray(values.astype(np.uint8))


def load_mvmc_npz(path: PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load an MVMC ``.npz`` file (arrays ``X`` and ``y``, see module docs).

    Float images in 0..1 are scaled by 255 and rounded; float images with
    values above 1 are taken as 0..255 and rounded.

    Args:
        path: the ``.npz`` file.  It is opened with ``allow_pickle=False``.

    Returns:
        ``(x, y_views, y)``: ``uint8`` images ``N x 6 x 3 x 32 x 32``, ``int64``
        per-view labels ``N x 6`` (:data:`ABSENT` = 3 for "not seen"), and
        ``int64`` object labels ``N`` from :func:`object_labels` (3 for a sample
        that no camera sees).

    Raises:
        MvmcFormatError: a missing key, a wrong shape or dtype, or labels out of
            range.
        DataError: the file cannot be read.
    """
    name = os.fspath(path)
    try:
        loaded = np.load(name, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read MVMC file {name}: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise MvmcFormatError(f"{name}: expected an .npz archive, got a single array")
    try:
        with loaded as npz:
            missing = [key for key in ("X", "y") if key not in npz.files]
            if missing:
                raise MvmcFormatError(
                    f"{name}: missing key(s) {', '.join(map(repr, missing))}; "
                    f"found {', '.join(map(repr, npz.files)) or 'none'}"
                )
            x = npz["X"]
            y_views = npz["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, MvmcFormatError):
            raise
        raise DataError(f"cannot read MVMC file {name}: {exc}") from exc

    if x.ndim != 5 or tuple(x.shape[1:]) != VIEW_SHAPE:
        raise MvmcFormatError(f"{name}: 'X' has shape {x.shape}, expected (N, {', '.join(map(str, VIEW_SHAPE))})")
    if y_views.shape != (x.shape[0], VIEW_SHAPE[0]):
        raise MvmcFormatError(f"{name}: 'y' has shape {y_views.shape}, expected ({x.shape[0]}, {VIEW_SHAPE[0]})")
    if y_views.dtype.kind not in "iu":
        if y_views.dtype.kind == "f" and np.all(np.mod(y_views, 1) == 0):
            pass
        else:
            raise MvmcFormatError(f"{name}: 'y' must hold integer labels, got {y_views.dtype}")
    y_views = y_views.astype(np.int64)
    if y_views.size and (y_views.min() < 0 or y_views.max() > ABSENT):
        raise MvmcFormatError(
            f"{name}: 'y' labels must lie in 0..{ABSENT} ({ABSENT} = absent), found {y_views.min()}..{y_views.max()}"
        )
    x = _to_uint8(x, name)
    return x, np.ascontiguousarray(y_views), object_labels(y_views)
