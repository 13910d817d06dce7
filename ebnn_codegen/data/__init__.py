"""Datasets for training and evaluating binarized networks.

Every loader returns plain numpy arrays: images as ``uint8`` arrays laid out
``N x C x H x W`` (multi-view sets: ``N x V x C x H x W``) and labels as
``int64``.

Modules:

* :mod:`ebnn_codegen.data.idx` -- reader and writer for the IDX format used by
  the MNIST family of datasets.
* :mod:`ebnn_codegen.data.mnist` -- MNIST, Fashion-MNIST and scikit-learn's
  8x8 digits as single-view image sets.
* :mod:`ebnn_codegen.data.multiview` -- multi-view benchmarks built from those
  (MNIST cut into tiles, and a deterministic MVMC-like set), plus the
  :data:`~ebnn_codegen.data.multiview.DATASETS` registry.
* :mod:`ebnn_codegen.data.mvmc` -- loader for the original MVMC ``.npz`` file.

Missing or malformed data raises :class:`DataError` with a message that says
how to obtain the data.
"""

from __future__ import annotations

from . import idx, mnist, multiview, mvmc
from .errors import DataError
from .idx import IdxFormatError, read_idx, write_idx  # noqa: E402
from .multiview import DATASETS, load_multiview, mnist_tiles, mvmc_like  # noqa: E402
from .mvmc import load_mvmc_npz  # noqa: E402

__all__ = [
    "DATASETS",
    "DataError",
    "IdxFormatError",
    "idx",
    "load_multiview",
    "load_mvmc_npz",
    "mnist",
    "mnist_tiles",
    "multiview",
    "mvmc",
    "mvmc_like",
    "read_idx",
    "write_idx",
]
