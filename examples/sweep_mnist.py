#!/usr/bin/env python3
"""Train several MNIST device-section configs (in parallel processes) and tabulate accuracy and cost.

    python examples/sweep_mnist.py examples/configs/uno/*.json --epochs 30 --out sweep/ [--device cuda]

For each config: test accuracy (torch, eval mode), first-block MACs (uint8),
binary MACs, weight bytes and workspace bytes (from the compiler's report when
the host toolchain is available, else from the config), and the checkpoint.
Used to choose examples/models/mnist_uno.pt (see docs/speed.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shlex
import sys
import time
from pathlib import Path

import torch
from train_mnist import add_recipe_arguments, fit

import ebnn_codegen as E
from ebnn_codegen.checkpoint import data_hash, training_record
from ebnn_codegen.config import parse_config
from ebnn_codegen.data.mnist import load as load_data
from ebnn_codegen.nn.train import AUGMENTS, accuracy


def cost(config: dict) -> dict:
    spec = parse_config(config)
    first = spec.layers[0]
    binary = sum(layer.macs for layer in spec.layers[1:])
    weight_bits = sum(layer.out_channels * layer.fan_in for layer in spec.layers)
    return {"first_macs": first.macs, "binary_macs": binary, "weight_bytes_approx": weight_bits // 8}


def one(job: tuple[str, dict, argparse.Namespace, str]) -> dict:
    path, config, args, command = job
    torch.set_num_threads(args.threads)
    x_train, y_train = load_data("mnist", "train", n=args.limit)
    x_test, y_test = load_data("mnist", "test")
    torch.manual_seed(args.seed)
    model = E.build(config)
    t0 = time.perf_counter()
    x_train, y_train, hist = fit(model, config, x_train, y_train, x_test, y_test, args, device=args.device, log=None)
    acc = accuracy(model, x_test, y_test)
    ckpt = Path(args.out) / f"{config['name']}.pt"
    model.config["meta"] = {
        "training": training_record(
            command,
            data_hash(x_train, y_train),
            dataset="mnist",
            samples=len(x_train),
            epochs=args.epochs,
            seconds=round(time.perf_counter() - t0, 1),
            threads=args.threads,
            torch_device=args.device,
        )
    }
    E.save(model, ckpt)
    res = {
        "config": path,
        "name": config["name"],
        "test_accuracy": acc,
        "val_curve": hist.val_acc,
        "train_seconds": round(time.perf_counter() - t0, 1),
        **cost(config),
    }
    print(json.dumps({k: v for k, v in res.items() if k != "val_curve"}), flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("configs", nargs="+")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="sweep")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--augment", default="shift", choices=sorted(AUGMENTS))
    add_recipe_arguments(p)
    p.add_argument("--threads", type=int, default=2, help="torch threads per job")
    p.add_argument("--limit", type=int, default=None, help="first N training images only")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    command = "python examples/sweep_mnist.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    jobs = [(c, json.loads(Path(c).read_text()), args, command) for c in args.configs]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(one, jobs)
    else:
        results = [one(j) for j in jobs]
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    for r in sorted(results, key=lambda r: -r["test_accuracy"]):
        print(
            f"{r['name']:<16} acc {r['test_accuracy']:.4f}  first MACs {r['first_macs']:>7}  "
            f"binary MACs {r['binary_macs']:>7}  weights {r['weight_bytes_approx']:>6} B",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
