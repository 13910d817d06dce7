"""Multi-view benchmarks for distributed (DDNN-style) networks.

Every loader returns a :class:`MultiView` (the one container of multi-view data in
the package: the DDNN trainer, runtime and networked tiers take it too):

``x``
    ``uint8`` views ``N x V x C x H x W`` (one view per end device).
``y_views``
    ``int64`` per-view labels ``N x V``; :data:`ABSENT` where a device does not
    see the object (its view is all zero).
``y``
    ``int64`` object labels ``N``.

Benchmarks:

``mnist-tiles`` (:func:`mnist_tiles`)
    Each 28x28 MNIST digit is padded with one zero row above and one below to
    30x28 and cut into a 3 rows x 2 columns grid of 10x14 tiles, one per device,
    in row-major order (device ``k`` sees row ``k // 2``, column ``k % 2``).
    Every device gets the digit as its label; nothing is absent.
``mvmc-like`` (:func:`mvmc_like`)
    A deterministic substitute for the MVMC multi-camera set, built from MNIST:
    three imbalanced classes, six heterogeneous devices, each with its own crop
    window, occlusion, noise and probability of seeing the object; see
    :data:`MVMC_LIKE_MNIST`.
``mvmc-like-fashion``
    The same construction over Fashion-MNIST (:data:`MVMC_LIKE_FASHION`).
``fashion-mnist-tiles``
    Fashion-MNIST cut like ``mnist-tiles``.
``digits-tiles``, ``mvmc-like-digits``
    The same constructions over scikit-learn's 8x8 digits: tiny and always
    available, meant for quick tests rather than for measuring accuracy.

All sets are reproducible: the same call returns the same arrays on every run,
and ``n=k`` returns exactly the first ``k`` samples of the full split.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, replace
from typing import Protocol, Union

import numpy as np

from . import mnist

PathLike = Union[str, "os.PathLike[str]"]

#: Per-view label of a device that does not see the object (as in MVMC).
ABSENT = 3
#: Number of devices (views) of every benchmark here.
NUM_DEVICES = 6
#: Tile grid of the ``*-tiles`` benchmarks: rows, columns.
TILE_GRID = (3, 2)


@dataclass
class MultiView:
    """One split of a multi-view dataset: ``x`` ``uint8`` views ``N x V x C x H x W``,
    ``y_views`` ``int64`` per-view labels ``N x V`` (:data:`ABSENT` where not seen), ``y``
    ``int64`` object labels ``N``; ``name`` and ``split`` say where it came from."""

    x: np.ndarray
    y_views: np.ndarray
    y: np.ndarray
    name: str = ""
    split: str = ""

    def __len__(self) -> int:
        return len(self.y)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y_views, y)``."""
        return self.x, self.y_views, self.y

    def subset(self, index: np.ndarray | slice) -> MultiView:
        return replace(self, x=self.x[index], y_views=self.y_views[index], y=self.y[index])

    @property
    def raw_bytes_per_sample(self) -> int:
        """Bytes of uploading every view as uint8 pixels (the raw-upload baseline)."""
        return int(np.prod(self.x.shape[1:]))


class MultiViewLoader(Protocol):
    """Signature shared by the loaders in :data:`DATASETS`."""

    def __call__(self, split: str, root: PathLike | None = None, *, n: int | None = None) -> MultiView: ...


# --------------------------------------------------------------------------- #
# Tiles
# --------------------------------------------------------------------------- #


def tile_padding(height: int, width: int, grid: tuple[int, int] = TILE_GRID) -> tuple[int, int]:
    """Zero rows and columns added *before* the image when it is cut into ``grid``.

    The image is padded to the next multiple of the grid in each direction,
    half of the padding before and the rest after (one row above and one below
    for 28 rows in 3 tiles).
    """
    rows, cols = grid
    pad_h = -height % rows
    pad_w = -width % cols
    return pad_h // 2, pad_w // 2


def tile_images(images: np.ndarray, grid: tuple[int, int] = TILE_GRID) -> np.ndarray:
    """Cut images into a grid of equal tiles, one view per tile.

    Args:
        images: ``N x C x H x W``.
        grid: ``(rows, cols)`` of the tile grid.

    Returns:
        ``N x (rows*cols) x C x th x tw`` tiles in row-major order, where the
        image was zero-padded to ``(rows*th) x (cols*tw)`` as described in
        :func:`tile_padding`.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images N x C x H x W, got shape {images.shape}")
    rows, cols = grid
    n, c, h, w = images.shape
    top, left = tile_padding(h, w, grid)
    th, tw = -(-h // rows), -(-w // cols)
    padded = np.zeros((n, c, rows * th, cols * tw), dtype=images.dtype)
    padded[:, :, top : top + h, left : left + w] = images
    tiles = padded.reshape(n, c, rows, th, cols, tw).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(tiles.reshape(n, rows * cols, c, th, tw))


def untile_images(tiles: np.ndarray, height: int, width: int, grid: tuple[int, int] = TILE_GRID) -> np.ndarray:
    """Reassemble ``N x V x C x th x tw`` tiles into ``N x C x height x width`` images.

    Inverse of :func:`tile_images` (the padding is cut away).
    """
    tiles = np.asarray(tiles)
    rows, cols = grid
    n, v, c, th, tw = tiles.shape
    if v != rows * cols:
        raise ValueError(f"{v} tiles do not form a {rows}x{cols} grid")
    padded = tiles.reshape(n, rows, cols, c, th, tw).transpose(0, 3, 1, 4, 2, 5)
    padded = padded.reshape(n, c, rows * th, cols * tw)
    top, left = tile_padding(height, width, grid)
    return np.ascontiguousarray(padded[:, :, top : top + height, left : left + width])


def tiles(base: str, split: str, root: PathLike | None = None, *, n: int | None = None) -> MultiView:
    """Cut the images of a single-view dataset into the 3x2 tile grid.

    Args:
        base: ``"mnist"``, ``"fashion-mnist"`` or ``"digits"`` (see
            :func:`ebnn_codegen.data.mnist.load`).
        split: ``"train"`` or ``"test"``.
        root: directory with IDX files (see :func:`ebnn_codegen.data.mnist.load`).
        n: keep only the first ``n`` samples.

    Returns:
        :class:`MultiView`; every view's label is the object label.
    """
    x, y = mnist.load(base, split, root, n=n)
    views = tile_images(x)
    y_views = np.repeat(y[:, None], views.shape[1], axis=1)
    return MultiView(views, np.ascontiguousarray(y_views), y, f"{base}-tiles", split)


def mnist_tiles(split: str, root: PathLike | None = None, *, n: int | None = None) -> MultiView:
    """MNIST cut into 6 tiles of 10x14 (3 rows x 2 columns, row-major).

    The 28x28 digit is padded with one zero row above and one below (30x28).

    Returns:
        :class:`MultiView` with ``x`` of shape ``N x 6 x 1 x 10 x 14``.
    """
    return tiles("mnist", split, root, n=n)


# --------------------------------------------------------------------------- #
# MVMC-like
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class DeviceSpec:
    """How one simulated device sees the object.

    Lengths are fractions of the source image size (``center`` and ``size`` of
    the crop window, ``jitter``) or of the view size (``occlusion_size``).
    """

    center: tuple[float, float]
    """Centre of the crop window (row, column)."""
    size: float
    """Side of the square crop window; above 1 the object looks smaller."""
    jitter: float
    """Per-sample random shift of the window, uniform in ``[-jitter, jitter]``."""
    noise: float
    """Standard deviation of additive Gaussian pixel noise (0..255 units)."""
    occlusion: float
    """Probability that a random block hides part of the view."""
    occlusion_size: float
    """Side of that block."""
    presence: tuple[float, float, float]
    """Probability of seeing the object, per class."""
    contrast: float = 1.0
    """Gain applied to the object's pixels before noise."""


@dataclass(frozen=True)
class MvmcLikeSpec:
    """Recipe of an MVMC-like benchmark."""

    base: str
    """Source dataset for :func:`ebnn_codegen.data.mnist.load`."""
    classes: tuple[int, int, int]
    """Source labels that become classes 0, 1, 2."""
    fractions: tuple[float, float, float]
    """Share of each class in both splits."""
    sizes: tuple[int, int]
    """Number of samples of the train and test split (reduced if the source
    has too few images of some class)."""
    devices: tuple[DeviceSpec, ...]
    view_size: int = 32
    seed: int = 20170605


_DEVICES = (
    # Four partial views (quadrants), a zoomed-in centre and a distant overview,
    # with increasing noise and occlusion and decreasing presence.
    DeviceSpec(
        center=(0.35, 0.35),
        size=0.6,
        jitter=0.06,
        noise=40.0,
        occlusion=0.3,
        occlusion_size=0.4,
        presence=(0.65, 0.55, 0.6),
    ),
    DeviceSpec(
        center=(0.35, 0.65),
        size=0.6,
        jitter=0.06,
        noise=50.0,
        occlusion=0.3,
        occlusion_size=0.45,
        presence=(0.45, 0.6, 0.45),
    ),
    DeviceSpec(
        center=(0.65, 0.35),
        size=0.55,
        jitter=0.08,
        noise=60.0,
        occlusion=0.4,
        occlusion_size=0.45,
        presence=(0.45, 0.5, 0.75),
    ),
    DeviceSpec(
        center=(0.65, 0.65),
        size=0.55,
        jitter=0.08,
        noise=70.0,
        occlusion=0.4,
        occlusion_size=0.5,
        presence=(0.65, 0.4, 0.55),
    ),
    DeviceSpec(
        center=(0.5, 0.5),
        size=0.45,
        jitter=0.1,
        noise=80.0,
        occlusion=0.5,
        occlusion_size=0.45,
        presence=(0.45, 0.55, 0.55),
    ),
    DeviceSpec(
        center=(0.5, 0.5),
        size=2.0,
        jitter=0.12,
        noise=100.0,
        occlusion=0.5,
        occlusion_size=0.45,
        presence=(0.35, 0.45, 0.4),
        contrast=0.7,
    ),
)

#: MVMC-like recipe over MNIST: digits 0, 6, 9 in a 50/30/20 mix.  Each
#: quadrant view separates only some of these (6 differs from 0 at the top
#: right, 9 at the bottom left), so the views complement each other.
#: The shipped DDNN (binary device sections as generated C, docs/ddnn.md) on the
#: 1500 test samples: single devices 0.72 0.74 0.71 0.67 0.67 0.51, all six
#: combined 0.95 (cameras 0 and 1 see the object in about 60 % of the samples).
MVMC_LIKE_MNIST = MvmcLikeSpec(
    base="mnist",
    classes=(0, 6, 9),
    fractions=(0.5, 0.3, 0.2),
    sizes=(10000, 1500),
    devices=_DEVICES,
)

#: MVMC-like recipe over Fashion-MNIST: T-shirt/top, sneaker, bag (50/30/20).
#: Same linear probe: single devices 0.81 0.79 0.75 0.67 0.69 0.63, all six
#: views concatenated 0.96.
MVMC_LIKE_FASHION = MvmcLikeSpec(
    base="fashion-mnist",
    classes=(0, 7, 8),
    fractions=(0.5, 0.3, 0.2),
    sizes=(10000, 1500),
    devices=_DEVICES,
)

#: MVMC-like recipe over the 8x8 digits (small; for quick tests).
MVMC_LIKE_DIGITS = MvmcLikeSpec(
    base="digits",
    classes=(0, 6, 9),
    fractions=(0.5, 0.3, 0.2),
    sizes=(10000, 10000),  # capped by the available images
    devices=_DEVICES,
)

_SPLIT_ID = {"train": 0, "test": 1}


def _rng(spec: MvmcLikeSpec, split: str, *key: int) -> np.random.Generator:
    base_id = zlib.crc32(spec.base.encode("utf-8"))
    return np.random.default_rng([spec.seed, base_id, _SPLIT_ID[split], *key])


def _select(spec: MvmcLikeSpec, split: str, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pick the samples of the three classes in the recipe's proportions.

    Returns source indices and class labels (0..2) in a seeded random order.
    """
    wanted = spec.sizes[_SPLIT_ID[split]]
    pools = [np.flatnonzero(labels == c) for c in spec.classes]
    feasible = min(len(pool) / f for pool, f in zip(pools, spec.fractions))
    total = min(wanted, int(feasible))
    counts = [int(round(total * f)) for f in spec.fractions]
    picked, classes = [], []
    for k, (pool, count) in enumerate(zip(pools, counts)):
        order = _rng(spec, split, 100, k).permutation(len(pool))
        count = min(count, len(pool))
        picked.append(pool[order[:count]])
        classes.append(np.full(count, k, dtype=np.int64))
    index = np.concatenate(picked)
    cls = np.concatenate(classes)
    order = _rng(spec, split, 101).permutation(len(index))
    return index[order], cls[order]


def _interp_matrix(coords: np.ndarray, length: int) -> np.ndarray:
    """Bilinear sampling weights ``N x S x length`` for sample positions ``N x S``.

    Positions outside ``[0, length - 1]`` blend with zero (zero padding).
    """
    grid = np.arange(length, dtype=np.float32)
    return np.maximum(0.0, 1.0 - np.abs(coords[:, :, None] - grid)).astype(np.float32)


def _presence(spec: MvmcLikeSpec, split: str, cls: np.ndarray) -> np.ndarray:
    """Which device sees which sample, ``N x V`` bool; every sample is seen at least once."""
    n, v = len(cls), len(spec.devices)
    probs = np.array([d.presence for d in spec.devices], dtype=np.float64)  # V x 3
    draws = np.stack([_rng(spec, split, dev, 0).random(n) for dev in range(v)], axis=1)
    seen: np.ndarray = draws < probs[:, cls].T
    unseen = ~seen.any(axis=1)
    # The object exists, so the device most likely to see its class sees it.
    seen[unseen, np.argmax(probs[:, cls[unseen]], axis=0)] = True
    return seen


def _render_device(spec: MvmcLikeSpec, split: str, dev: int, images: np.ndarray) -> np.ndarray:
    """Render device ``dev``'s view of ``images`` (``N x C x H x W``) as float32 ``N x C x S x S``."""
    d = spec.devices[dev]
    n, c, h, w = images.shape
    s = spec.view_size

    shift = _rng(spec, split, dev, 1).uniform(-1.0, 1.0, size=(n, 2)) * d.jitter
    centre_r = (d.center[0] + shift[:, 0]) * h
    centre_c = (d.center[1] + shift[:, 1]) * w
    steps = (np.arange(s) + 0.5) / s - 0.5  # S positions across the window, in window units
    rows = (centre_r[:, None] + steps[None, :] * d.size * h - 0.5).astype(np.float32)
    cols = (centre_c[:, None] + steps[None, :] * d.size * w - 0.5).astype(np.float32)
    ry = _interp_matrix(rows, h)  # N x S x H
    rx = _interp_matrix(cols, w)  # N x S x W
    src = images.astype(np.float32)
    # out[n, ch] = ry[n] @ src[n, ch] @ rx[n].T
    view: np.ndarray = np.einsum("nih,nchw->nciw", ry, src, optimize=True)
    view = np.einsum("nciw,njw->ncij", view, rx, optimize=True)
    view *= d.contrast

    occ = _rng(spec, split, dev, 2).random(size=(n, 4))
    block = max(1, int(round(d.occlusion_size * s)))
    for i in np.flatnonzero(occ[:, 0] < d.occlusion):
        top = int(occ[i, 1] * (s - block + 1))
        left = int(occ[i, 2] * (s - block + 1))
        view[i, :, top : top + block, left : left + block] = 255.0 * occ[i, 3]

    if d.noise > 0:
        noise = _rng(spec, split, dev, 3).standard_normal(size=(n, c, s, s), dtype=np.float32)
        view += d.noise * noise
    return view


def generate_mvmc_like(
    spec: MvmcLikeSpec, split: str, root: PathLike | None = None, *, n: int | None = None
) -> MultiView:
    """Build one split of an MVMC-like benchmark from ``spec``.

    For each selected source image and each device: crop the device's window
    (bilinear, zero outside the image, with a per-sample jitter) to
    ``view_size x view_size``, scale by ``contrast``, paste an occluding block
    of random grey level with probability ``occlusion``, add Gaussian noise,
    and round and clip to ``uint8``.  A device that does not see the object
    (drawn per sample from its ``presence`` for the object's class) gets an
    all-zero view and the label :data:`ABSENT`; every object is seen by at
    least one device.

    Args:
        spec: the recipe.
        split: ``"train"`` or ``"test"``.
        root: directory with IDX files for the source dataset.
        n: keep only the first ``n`` samples (the same as slicing the full split).

    Returns:
        :class:`MultiView` with ``x`` of shape ``N x 6 x C x S x S``.
    """
    if split not in _SPLIT_ID:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    if n is not None and n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    source, labels = mnist.load(spec.base, split, root)
    index, cls = _select(spec, split, labels)
    if n is not None:
        index, cls = index[:n], cls[:n]
    images = source[index]
    seen = _presence(spec, split, cls)

    v, s = len(spec.devices), spec.view_size
    x = np.zeros((len(index), v, images.shape[1], s, s), dtype=np.uint8)
    for dev in range(v):
        view = _render_device(spec, split, dev, images)
        view = np.clip(np.rint(view), 0, 255).astype(np.uint8)
        view[~seen[:, dev]] = 0
        x[:, dev] = view
    y_views = np.where(seen, cls[:, None], ABSENT).astype(np.int64)
    return MultiView(x, y_views, cls, f"mvmc-like of {spec.base}", split)


def mvmc_like(
    split: str,
    root: PathLike | None = None,
    base: str = "mnist",
    *,
    n: int | None = None,
) -> MultiView:
    """MVMC-like 6-device benchmark over ``base`` (``"mnist"``, ``"fashion-mnist"`` or ``"digits"``).

    Three classes in a 50/30/20 mix; views are ``1 x 32 x 32``; see
    :data:`MVMC_LIKE_MNIST` for the device recipe and :func:`generate_mvmc_like`
    for the construction.

    Returns:
        :class:`MultiView` with ``x`` of shape ``N x 6 x 1 x 32 x 32``.
    """
    specs = {"mnist": MVMC_LIKE_MNIST, "fashion-mnist": MVMC_LIKE_FASHION, "digits": MVMC_LIKE_DIGITS}
    if base not in specs:
        raise ValueError(f"unknown base {base!r}; expected one of {', '.join(specs)}")
    return generate_mvmc_like(specs[base], split, root, n=n)


def _tiles_loader(base: str) -> MultiViewLoader:
    def load(split: str, root: PathLike | None = None, *, n: int | None = None) -> MultiView:
        return tiles(base, split, root, n=n)

    load.__doc__ = f"{base} cut into 3x2 tiles (see :func:`tiles`)."
    return load


def _mvmc_loader(base: str) -> MultiViewLoader:
    def load(split: str, root: PathLike | None = None, *, n: int | None = None) -> MultiView:
        return mvmc_like(split, root, base, n=n)

    load.__doc__ = f"MVMC-like benchmark over {base} (see :func:`mvmc_like`)."
    return load


#: Multi-view datasets by name; each loader takes ``(split, root=None, *, n=None)``.
DATASETS: dict[str, MultiViewLoader] = {
    "mnist-tiles": _tiles_loader("mnist"),
    "fashion-mnist-tiles": _tiles_loader("fashion-mnist"),
    "digits-tiles": _tiles_loader("digits"),
    "mvmc-like": _mvmc_loader("mnist"),
    "mvmc-like-fashion": _mvmc_loader("fashion-mnist"),
    "mvmc-like-digits": _mvmc_loader("digits"),
}


def load_multiview(name: str, split: str, root: PathLike | None = None, *, n: int | None = None) -> MultiView:
    """Load a dataset of :data:`DATASETS` by name."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown multi-view dataset {name!r}; expected one of {', '.join(DATASETS)}") from None
    return loader(split, root, n=n)


__all__ = [
    "ABSENT",
    "DATASETS",
    "DeviceSpec",
    "MVMC_LIKE_DIGITS",
    "MVMC_LIKE_FASHION",
    "MVMC_LIKE_MNIST",
    "MultiViewLoader",
    "MultiView",
    "MvmcLikeSpec",
    "NUM_DEVICES",
    "TILE_GRID",
    "generate_mvmc_like",
    "load_multiview",
    "mnist_tiles",
    "mvmc_like",
    "tile_images",
    "tiles",
    "untile_images",
]
