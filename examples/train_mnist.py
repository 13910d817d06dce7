#!/usr/bin/env python3
"""Train a binarized device section on MNIST (or Fashion-MNIST / 8x8 digits), end to end.

    python examples/train_mnist.py                      # examples/configs/mnist_small.json, 6 epochs
    python examples/train_mnist.py --config examples/configs/mnist_small.json --epochs 10 -o model.pt
    python examples/train_mnist.py --config examples/configs/rgb32_device.json --dataset fashion-mnist \
        --classes 0,1,7 --rgb32 --epochs 3 -o examples/models/rgb32_device.pt

Steps: load the data (standard IDX files, see ebnn_codegen.data.mnist), train
with ebnn_codegen.nn.train (sign + straight-through estimator, clipped shadow
weights), save the checkpoint, compile it to C, run the host C build on the
whole test set, print its accuracy, and check bit-exactness against PyTorch on
the test images.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ebnn_codegen as E
from ebnn_codegen import api
from ebnn_codegen.checkpoint import data_hash, training_record
from ebnn_codegen.data.mnist import load as load_data
from ebnn_codegen.nn.train import (
    AUGMENTS,
    History,
    Log,
    accuracy,
    finetune_deployed,
    float_teacher,
    reestimate_batch_norm,
    train,
    train_head,
)

HERE = Path(__file__).resolve().parent


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def select_classes(x: np.ndarray, y: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The samples of the labels in ``keep``, relabelled by their position in it."""
    mask = np.isin(y, keep)
    relabel = {c: i for i, c in enumerate(keep)}
    return np.ascontiguousarray(x[mask]), np.array([relabel[int(v)] for v in y[mask]], dtype=np.int64)


def to_rgb32(x: np.ndarray) -> np.ndarray:
    """N x 1 x 28 x 28 -> N x 3 x 32 x 32: 2 pixels of zeros around, the grey image on all 3 channels."""
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(padded, 3, axis=1))


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The training-recipe options shared with examples/sweep_mnist.py."""
    p.add_argument(
        "--reestimate-bn",
        action="store_true",
        help="after training, recompute the batch-norm statistics over the training images",
    )
    p.add_argument(
        "--distill",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="train a float teacher first (--teacher-epochs) and distil it with this weight (0: off)",
    )
    p.add_argument("--teacher-epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        metavar="N",
        help="keep the last N training images out of training, to choose the fine-tuned state (never the test set)",
    )
    p.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="after training (and the batch-norm pass), fine-tune with the batch norms frozen and the first "
        "block fixed, keeping the best state on the --holdout images",
    )
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument(
        "--head-epochs",
        type=int,
        default=0,
        metavar="N",
        help="after training and the batch-norm pass, retrain the linear head on the frozen blocks' "
        "features for N epochs (then its batch-norm pass), before --finetune",
    )
    p.add_argument("--head-lr", type=float, default=1e-3)


def teacher_for(
    config: dict,
    x: np.ndarray,
    y: np.ndarray,
    distill: float,
    epochs: int,
    seed: int,
    augment: str | None,
    **kw: object,
) -> torch.nn.Module | None:
    """A trained float teacher for ``--distill`` (None when it is 0)."""
    if distill <= 0:
        return None
    teacher = float_teacher(tuple(config["input"]), config["layers"][-1]["classes"])
    train(teacher, x, y, epochs=epochs, lr=1e-3, seed=seed, augment=AUGMENTS[augment] if augment else None, **kw)
    return teacher


def fit(
    model: torch.nn.Module,
    config: dict,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    args: argparse.Namespace,
    *,
    device: str = "cpu",
    log: Log | None = _log,
) -> tuple[np.ndarray, np.ndarray, History]:
    """The training recipe of add_recipe_arguments' options, in order: the last ``--holdout``
    images set aside, a float teacher (``--distill``), training (the test images only for the
    printed curve), the batch-norm pass, the head retrained on the frozen features
    (``--head-epochs``), the deployed fine-tune that keeps its best state on the held-out images.
    Returns the images the model was trained on and the training's History."""
    if args.holdout:
        x_hold, y_hold = x_train[len(x_train) - args.holdout :], y_train[len(y_train) - args.holdout :]
        x_train, y_train = x_train[: len(x_train) - args.holdout], y_train[: len(y_train) - args.holdout]
    augment = AUGMENTS[args.augment] if args.augment else None
    kw: dict = {"batch_size": args.batch_size, "device": device, "log": log}
    teacher = teacher_for(config, x_train, y_train, args.distill, args.teacher_epochs, args.seed, args.augment, **kw)
    hist = History()
    if args.epochs > 0:
        hist = train(
            model,
            x_train,
            y_train,
            epochs=args.epochs,
            lr=args.lr,
            x_val=x_test,
            y_val=y_test,
            seed=args.seed,
            augment=augment,
            teacher=teacher,
            distill=args.distill,
            **kw,
        )
    if args.reestimate_bn:
        reestimate_batch_norm(model, x_train, device=device)
    if args.head_epochs:
        train_head(
            model,
            x_train,
            y_train,
            epochs=args.head_epochs,
            batch_size=args.batch_size,
            lr=args.head_lr,
            seed=args.seed + 2,
            log=log,
            x_val=x_hold if args.holdout else None,
            y_val=y_hold if args.holdout else None,
        )
    if args.finetune:
        finetune_deployed(
            model,
            x_train,
            y_train,
            x_val=x_hold,
            y_val=y_hold,
            epochs=args.finetune,
            batch_size=args.batch_size,
            lr=args.finetune_lr,
            seed=args.seed + 1,
            augment=augment,
            log=log,
        )
    return x_train, y_train, hist


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(HERE / "configs" / "mnist_small.json"))
    p.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start from this trained checkpoint (its config; --config is not read); with --epochs 0 only "
        "the later stages run (--reestimate-bn, --head-epochs, --finetune)",
    )
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist", "digits"))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    p.add_argument(
        "--augment",
        nargs="?",
        const="shift",
        default=None,
        choices=sorted(AUGMENTS),
        help="shift: the batch moved by up to 2 pixels (the default with no value); crop: each image "
        "on its own; crop-flip: crop, and mirrored left-right half of the time",
    )
    add_recipe_arguments(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None, help="keep only these labels (comma-separated), relabelled 0, 1, ...")
    p.add_argument("--rgb32", action="store_true", help="zero-pad 28x28 to 32x32 and repeat it on 3 channels")
    p.add_argument("-o", "--output", default=None, help="checkpoint path (default: <name>.pt)")
    p.add_argument("--export", default=None, metavar="DIR", help="where to write the C (default: out/<name>)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    init = E.load(args.init) if args.init else None
    config = init.config if init is not None else json.loads(Path(args.config).read_text())
    x_train, y_train = load_data(args.dataset, "train", n=args.train_limit)
    x_test, y_test = load_data(args.dataset, "test")
    if args.classes:
        keep = [int(c) for c in args.classes.split(",")]
        x_train, y_train = select_classes(x_train, y_train, keep)
        x_test, y_test = select_classes(x_test, y_test, keep)
    if args.rgb32:
        x_train, x_test = to_rgb32(x_train), to_rgb32(x_test)
    if args.finetune and not 0 < args.holdout < len(x_train):
        p.error("--finetune needs --holdout N with 0 < N < the number of training images")
    print(f"data: {args.dataset} train {x_train.shape} test {x_test.shape}", file=sys.stderr)

    torch.manual_seed(args.seed)
    model = E.build({k: v for k, v in config.items() if k != "meta"})
    if init is not None:
        model.load_state_dict(init.state_dict())
    t0 = time.perf_counter()
    x_train, y_train, _ = fit(model, config, x_train, y_train, x_test, y_test, args)
    train_s = time.perf_counter() - t0
    out = Path(args.output or f"{config['name']}.pt")
    model.config["meta"] = {
        "training": training_record(
            "python examples/train_mnist.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            data_hash(x_train, y_train),
            dataset=args.dataset,
            classes=[int(c) for c in args.classes.split(",")] if args.classes else None,
            preprocess="rgb32" if args.rgb32 else None,
            samples=len(x_train),
            epochs=args.epochs,
            seconds=round(train_s, 1),
            threads=args.threads,
            init=(init.config.get("meta") or {}).get("training") if init is not None else None,
        )
    }
    E.save(model, out)
    print(f"saved {out} (training took {train_s:.0f} s)", file=sys.stderr)

    # The deployed artefact: the generated C, run on the host over the whole test set.
    model = E.load(out)
    graph = E.compile(model, log=lambda m: print(m, file=sys.stderr))
    c_dir = Path(args.export or f"out/{graph.name}")
    written = E.export(graph, c_dir)
    print(f"exported {len(written)} C files to {c_dir}", file=sys.stderr)
    t0 = time.perf_counter()
    result = api.run(graph, x_test)
    c_s = time.perf_counter() - t0
    c_acc = float(np.mean(result.pred == y_test))
    t_acc = accuracy(model, x_test, y_test)
    rep = api.compare(graph, model, x_test, result, "host", "fast")
    print(rep.summary())
    print(
        json.dumps(
            {
                "model": str(out),
                "dataset": args.dataset,
                "test_accuracy_host_c": c_acc,
                "test_accuracy_torch": t_acc,
                "test_samples": len(x_test),
                "host_c_seconds": round(c_s, 3),
                "bit_exact": rep.ok,
                "train_seconds": round(train_s, 1),
            },
            indent=2,
        )
    )
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
