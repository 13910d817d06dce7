#!/usr/bin/env python3
"""Write the training record of a shipped checkpoint that was trained before the training scripts kept one.

    python scripts/record_training.py examples/models/ddnn_mnist_tiles.pt examples/models/mnist_uno.pt
    python scripts/record_training.py --check examples/models/*.pt   # compare, write nothing

Every checkpoint written today by ``ebnn-gen ddnn train``, ``examples/train_mnist.py`` and the
sweep scripts records in ``config.meta.training`` the command, the package and PyTorch versions
and the SHA-256 of its training data (:func:`ebnn_codegen.checkpoint.training_record`).  Two
shipped models were trained before that existed, from commands documented beside them; this
script writes their record from what is known about those runs (:data:`RUNS`) and says so in
the record itself (``recorded_after``):

* the command: as documented (docs/ddnn.md, the README's "Reference models");
* ``package_version``: ``__version__`` in the tree of the commit that shipped the checkpoint;
* ``torch_version``: for runs on this project's CPU environment, the version scripts/setup.sh
  pinned when they ran (2.13.0 since the first commit); ``None`` where the run used another
  PyTorch build that nobody wrote down (the CUDA run of mnist_uno), with ``torch_version_note``;
* ``data_sha256``: computed now, the way the training command computes it, from today's data
  (the MNIST files are pinned by SHA-256 and the loaders are unchanged since those runs);
* fields the run already recorded (seconds, threads, epochs ...) are kept as they are (none of them
  is in :data:`RUNS`).

The weights are not touched: the script rewrites the checkpoint with the same tensors and checks
that every tensor is byte-identical afterwards.  Limits: the record states the command that made
a model; it does not prove it (only a rerun would; for mnist_uno only on a GPU of the same kind,
since CUDA kernels round differently from the CPU's).  A model not listed in :data:`RUNS` is
refused (exit 2): a new model gets its record from the command that trains it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ebnn_codegen.checkpoint import data_hash, read_checkpoint  # noqa: E402
from ebnn_codegen.errors import CodegenError  # noqa: E402

AFTER = (
    "written afterwards by scripts/record_training.py (the run predates training records): command as "
    "documented in {doc}; package_version from the tree of commit {commit} that shipped the checkpoint; "
    "data_sha256 computed from today's data, which the unchanged loaders reproduce"
)


def tiles_hash() -> str:
    """What ``ebnn-gen ddnn train ... --dataset mnist-tiles`` hashes: the whole train split, before the hold-out."""
    from ebnn_codegen.ddnn import datasets

    data = datasets.load("mnist-tiles", "train")
    return data_hash(data.x, data.y, data.y_views)


def mnist_hash() -> str:
    """What ``examples/sweep_mnist.py`` hashes: the MNIST train split as loaded (no --limit)."""
    from ebnn_codegen.data.mnist import load

    x, y = load("mnist", "train")
    return data_hash(x, y)


RUNS: dict[str, dict[str, Any]] = {
    "ddnn_mnist_tiles.pt": {
        "hash": tiles_hash,
        "record": {
            "command": "ebnn-gen ddnn train examples/ddnn_mnist_tiles.json --dataset mnist-tiles "
            "-o examples/models/ddnn_mnist_tiles.pt",
            "package_version": "0.1.0",
            "torch_version": "2.13.0",
            "torch_version_note": "the CPU build scripts/setup.sh pinned when the run was made (one thread)",
            "shipped_in": "1d65a34",
            "recorded_after": AFTER.format(doc="docs/ddnn.md", commit="1d65a34"),
        },
    },
    "mnist_uno.pt": {
        "hash": mnist_hash,
        "record": {
            "command": "python examples/sweep_mnist.py examples/configs/mnist_uno.json --epochs 40 --lr 3e-3 "
            "--out out/ --device cuda",
            "package_version": "0.1.0",
            "torch_version": None,
            "torch_version_note": "not written down: a CUDA build of PyTorch (setup.py then allowed >=2.1,<=2.13.0) "
            "on one NVIDIA H200",
            "dataset": "mnist",
            "samples": 60000,
            "epochs": 40,
            "threads": 2,
            "torch_device": "cuda",
            "reproducible_on": "a GPU of the same kind with the same PyTorch build only: CUDA kernels round "
            "differently from the CPU's, and 40 epochs amplify a last-bit difference",
            "shipped_in": "1add1f7",
            "recorded_after": AFTER.format(doc="README.md (Reference models)", commit="1add1f7"),
        },
    },
}
REQUIRED = ("command", "package_version", "torch_version", "data_sha256")


def record_for(path: Path, old: dict[str, Any], compute: Callable[[], str]) -> dict[str, Any]:
    """The record to write: what the run recorded, completed by :data:`RUNS` and the data hash."""
    rec = {**old, **RUNS[path.name]["record"], "data_sha256": compute()}
    return {k: rec[k] for k in (*REQUIRED, *(k for k in rec if k not in REQUIRED))}


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    if list(a) != list(b):
        return False
    return all(
        x.dtype == y.dtype
        and x.shape == y.shape
        and x.contiguous().numpy().tobytes() == y.contiguous().numpy().tobytes()
        for x, y in ((a[k], b[k]) for k in a)
    )


def write(path: Path, obj: dict[str, Any], rec: dict[str, Any]) -> None:
    """Save ``obj`` with ``rec`` as its training record (atomically), then check the weights."""
    before = {k: v.clone() for k, v in obj["state_dict"].items()}
    config = dict(obj["config"])
    config["meta"] = {**(config.get("meta") or {}), "training": rec}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**obj, "config": config}, tmp)
    after = read_checkpoint(tmp)
    if not same_tensors(before, after["state_dict"]):
        tmp.unlink()
        raise CodegenError(f"{path}: the rewritten weights differ (nothing written)")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="MODEL.pt")
    p.add_argument("--check", action="store_true", help="compare each listed model's record with RUNS; write nothing")
    args = p.parse_args(argv)
    failed = 0
    for name in args.models:
        path = Path(name)
        try:
            obj = read_checkpoint(path)
            old = dict((obj["config"].get("meta") or {}).get("training") or {})
            if path.name not in RUNS:
                if args.check:
                    continue
                raise CodegenError(
                    f"{path}: not a model this script knows (its record comes from its training command)"
                )
            rec = record_for(path, old, RUNS[path.name]["hash"])
        except CodegenError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.check:
            ok = old == rec
            failed += not ok
            print(f"{'ok' if ok else 'DIFFERS'}: {path}")
        else:
            write(path, obj, rec)
            print(f"wrote the training record of {path} (weights unchanged)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
