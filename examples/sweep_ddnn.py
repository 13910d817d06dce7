#!/usr/bin/env python3
"""Train several DDNN configs (in parallel processes) and tabulate the staged-runtime results.

    python examples/sweep_ddnn.py examples/configs/ddnn/*.json --dataset mnist-tiles --out sweep/ \
        [--jobs 4] [--torch-device cuda] [--threads 2]

For each config, the same steps as ``ebnn-gen ddnn train`` (train, calibrate
the messages, choose the exit threshold on the held-out part), then the
evaluation of ``ebnn-gen ddnn eval --devices torch`` on the test split
(bit-exact with the generated C, and faster for a sweep): overall accuracy,
local-exit fraction, cloud-exit accuracy, the worst accuracy with one device
failed, bytes per sample; plus the checkpoint and the per-epoch history.
Used to choose examples/ddnn_mnist_tiles.json (see docs/ddnn.md).
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


def one(job: tuple[str, str, str, str, int, int | None, str]) -> dict:
    path = job[0]
    try:
        return _one(job)
    except Exception as exc:  # one failed config must not lose the others' results
        print(json.dumps({"config": path, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return {"config": path, "error": f"{type(exc).__name__}: {exc}"}


def _one(job: tuple[str, str, str, str, int, int | None, str]) -> dict:
    path, dataset, device, out, threads, limit, command = job
    from ebnn_codegen import api
    from ebnn_codegen.checkpoint import data_hash, training_record
    from ebnn_codegen.ddnn import datasets, metrics
    from ebnn_codegen.ddnn import train as tr
    from ebnn_codegen.ddnn.model import DDNN

    torch.set_num_threads(threads)
    config = json.loads(Path(path).read_text())
    torch.manual_seed(int(config.get("training", {}).get("seed", 0)))
    model = DDNN(config)
    data = datasets.load(dataset, "train", limit)
    test = datasets.load(dataset, "test")
    fit, val = tr.split_validation(data, float(model.config["training"]["validation"]))
    name = model.name
    log_path = Path(out) / f"{name}.log"

    def log(msg: str) -> None:
        with log_path.open("a") as f:
            f.write(msg + "\n")

    t0 = time.perf_counter()
    hist = tr.train(model, fit, val=val, log=log, device=device)
    seconds = time.perf_counter() - t0
    tr.calibrate_messages(model, fit)
    tr.choose_thresholds(model, val if val is not None else fit, devices="torch")
    model.meta = {
        "training": training_record(
            f"{command} (config {path})",
            data_hash(data.x, data.y, data.y_views),
            dataset=dataset,
            samples=len(fit),
            epochs=int(model.config["training"]["epochs"]),
            seconds=round(seconds, 1),
            threads=threads,
            torch_device=str(device),
        )
    }
    api.save(model, Path(out) / f"{name}.pt")
    rep = metrics.evaluate(model, test, devices="torch", with_scaling=False)
    res = {
        "config": path,
        "torch_device": str(device),
        "name": name,
        "train_seconds": round(seconds, 1),
        "threshold": rep["thresholds"]["local"],
        "overall_accuracy": rep["overall_accuracy"],
        "local_exit_fraction": rep["local_exit_fraction"],
        "exit_accuracy": rep["exit_accuracy"],
        "worst_single_failure_accuracy": rep["worst_single_failure_accuracy"],
        "device_failure": [round(e["overall_accuracy"], 4) for e in rep["device_failure"]],
        "bytes_per_sample": rep["bytes_per_sample"],
        "val_curve": [e.get("val_accuracy") for e in hist.epochs],
    }
    print(json.dumps({k: v for k, v in res.items() if k != "val_curve"}), flush=True)
    (Path(out) / f"{name}.json").write_text(json.dumps(res, indent=1))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("configs", nargs="+")
    p.add_argument("--dataset", required=True)
    p.add_argument("--torch-device", default="cpu")
    p.add_argument("--out", default="sweep")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--limit", type=int, default=None, help="first N training samples only")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    command = "python examples/sweep_ddnn.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    jobs = [(c, args.dataset, args.torch_device, args.out, args.threads, args.limit, command) for c in args.configs]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(one, jobs, chunksize=1)
    else:
        results = [one(j) for j in jobs]
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    for r in results:
        if "error" in r:
            print(f"{r['config']}: error: {r['error']}", file=sys.stderr)
    results = [r for r in results if "error" not in r]
    for r in sorted(results, key=lambda r: -r["overall_accuracy"]):
        print(
            f"{r['name']:<24} overall {r['overall_accuracy']:.4f}  local {r['local_exit_fraction']:.3f}  "
            f"cloud {r['exit_accuracy']['cloud']:.4f}  worst failure {r['worst_single_failure_accuracy']:.4f}  "
            f"{r['train_seconds']:.0f} s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
