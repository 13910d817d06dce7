"""The example's input: a real test image of the model's task where one is known.

Where the sample comes from, in order:

1. an array given by the caller (``--sample X.npy``: uint8, C×H×W or 1×C×H×W);
2. ``--sample DATASET[:INDEX]`` (``mnist``, ``fashion-mnist`` or ``digits``): image
   ``INDEX`` of that dataset's test split, or by default the first test image the model
   classifies correctly;
3. the dataset recorded in the checkpoint's metadata by the training scripts
   (``config.meta.training.dataset``, with ``classes`` and ``preprocess`` where the
   script relabelled or reshaped the images), read like 2.;
4. otherwise a fixed pseudo-random image, said so in the sketch.

Limits: only the single-view image sets of :mod:`ebnn_codegen.data.mnist` are known;
a dataset that cannot be loaded (no copy on this machine, no network) falls back to 4.
with the reason recorded in :attr:`Sample.note`; preprocessing known here is the
``rgb32`` of ``examples/train_mnist.py`` (pad 28×28 to 32×32, repeat on 3 channels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import reference
from ..errors import CodegenError
from ..ir import Model
from ..targets.base import check_inputs

#: Datasets whose test images can serve as the example's input.
KNOWN = ("mnist", "fashion-mnist", "digits")
LABELS = {
    "fashion-mnist": (
        "T-shirt/top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    )
}
#: How many test images are searched for one the model classifies correctly.
SEARCH = 64


@dataclass
class Sample:
    """One example input (1, C, H, W) and where it came from."""

    x: np.ndarray
    description: str  # one line, for the sketch and the README
    dataset: str | None = None
    index: int | None = None
    label: int | None = None
    label_name: str | None = None
    note: str = ""  # why no real image was used, when none was

    def record(self) -> dict[str, Any]:
        """The JSON-able part (what the export records)."""
        return {
            "description": self.description,
            "dataset": self.dataset,
            "split": "test" if self.dataset else None,
            "index": self.index,
            "label": self.label,
            "label_name": self.label_name,
        }


def noise(graph: Model) -> np.ndarray:
    """A fixed pseudo-random image (1, C, H, W)."""
    rng = np.random.default_rng(2024)
    return rng.integers(0, 256, size=(1, *graph.input_shape), dtype=np.uint8)


def checkpoint_task(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training record in a checkpoint's metadata ({} when there is none)."""
    from ..checkpoint import read_checkpoint

    meta = read_checkpoint(path)["config"].get("meta") or {}
    training = meta.get("training") if isinstance(meta, dict) else None
    return dict(training) if isinstance(training, dict) else {}


def _rgb32(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(padded, 3, axis=1))


def _test_images(
    dataset: str, classes: list[int] | None, preprocess: str | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Test split of ``dataset`` as the training script saw it (relabelled, reshaped)."""
    from ..data import mnist

    x, y = mnist.load(dataset, "test", download=download)
    if classes:
        keep = np.isin(y, classes)
        relabel = {c: i for i, c in enumerate(classes)}
        x, y = x[keep], np.array([relabel[int(v)] for v in y[keep]], dtype=np.int64)
    if preprocess == "rgb32":
        x = _rgb32(x)
    elif preprocess:
        raise CodegenError(f"unknown preprocessing {preprocess!r} in the checkpoint's metadata")
    return x, y


def from_dataset(
    graph: Model,
    dataset: str,
    index: int | None = None,
    classes: list[int] | None = None,
    preprocess: str | None = None,
    download: bool = False,
) -> Sample:
    """Test image ``index`` of ``dataset`` (default: the first one the model gets right);
    ``download``: allow fetching MNIST into the cache (see :mod:`ebnn_codegen.data.mnist`)."""
    if dataset not in KNOWN:
        raise CodegenError(f"unknown sample dataset {dataset!r} (choose from: {', '.join(KNOWN)})")
    x, y = _test_images(dataset, classes, preprocess, download)
    if tuple(x.shape[1:]) != tuple(graph.input_shape):
        raise CodegenError(
            f"{dataset} test images are {'x'.join(map(str, x.shape[1:]))}, the model takes "
            f"{'x'.join(map(str, graph.input_shape))}"
        )
    if index is None:
        pred = reference.run(graph, x[:SEARCH]).pred
        hits = np.flatnonzero(pred == y[:SEARCH])
        index = int(hits[0]) if len(hits) else 0
    if not 0 <= index < len(x):
        raise CodegenError(f"{dataset} has test images 0..{len(x) - 1}, got {index}")
    label = int(y[index])
    original = classes[label] if classes else label
    names = LABELS.get(dataset)
    name = names[original] if names else str(original)
    what = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "digits": "scikit-learn digits"}[dataset]
    extra = " (padded to 32x32, 3 channels)" if preprocess == "rgb32" else ""
    desc = f"{what} test image #{index}{extra}, label {label}" + (f" ({name})" if name != str(label) else "")
    return Sample(x[index : index + 1].copy(), desc, dataset, index, label, name)


def _from_array(graph: Model, x: np.ndarray, what: str) -> Sample:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise CodegenError(f"the sample must be uint8 pixels, got {x.dtype}")
    x = check_inputs(graph, x[None] if x.ndim == 3 else x)
    if len(x) != 1:
        raise CodegenError(f"the example takes one sample, got {len(x)}")
    return Sample(x, what)


def parse_spec(spec: str) -> tuple[str, int | None] | None:
    """``DATASET[:INDEX]`` -> (dataset, index); None when ``spec`` names no known dataset."""
    name, _, idx = spec.partition(":")
    if name not in KNOWN:
        return None
    if idx and not idx.isdigit():
        raise CodegenError(f"--sample {spec}: the index after ':' must be a number")
    return name, int(idx) if idx else None


def resolve(
    graph: Model,
    sample: np.ndarray | str | os.PathLike[str] | Sample | None = None,
    task: dict[str, Any] | None = None,
) -> Sample:
    """The example's input: see the module documentation for the order of the sources.

    ``sample``: an array, a ``.npy`` path, ``DATASET[:INDEX]``, a :class:`Sample`, or None;
    ``task``: the checkpoint's training record (:func:`checkpoint_task`)."""
    if isinstance(sample, Sample):
        return sample
    if isinstance(sample, (str, os.PathLike)):
        path = Path(sample)
        spec = parse_spec(str(sample)) if not path.exists() else None
        if spec is not None:
            return from_dataset(graph, spec[0], spec[1], download=True)
        from ..npyfile import load_npy

        return _from_array(graph, load_npy(str(path)), f"the input in {path.name}")
    if sample is not None:
        return _from_array(graph, sample, "an input given by the user")
    task = task or {}
    dataset = task.get("dataset")
    if isinstance(dataset, str) and dataset in KNOWN:
        try:
            return from_dataset(graph, dataset, None, task.get("classes"), task.get("preprocess"))
        except CodegenError as exc:
            note = f"the {dataset} test set could not be used ({str(exc).splitlines()[0]})"
    elif dataset:
        note = f"no test images known for dataset {dataset!r}"
    else:
        note = "the checkpoint does not record its training data"
    return Sample(noise(graph), "a fixed pseudo-random input (not a real image)", note=note)


__all__ = ["KNOWN", "Sample", "checkpoint_task", "from_dataset", "noise", "parse_spec", "resolve"]
