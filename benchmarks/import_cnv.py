"""Benchmark-sized import: a CNV-W1A1-shaped Brevitas network on 32x32x3, bit-exact on the host.

FINN's CNV topology (conv 64-64 / pool / 128-128 / pool / 256-256 / FC 512-512-10, 3x3 kernels
without padding, binary weights, bipolar activations, batch norm, max-pool after the sign),
trained briefly on Fashion-MNIST padded to 32x32 and repeated to 3 channels (accuracy is not the
point, exactness is), exported with Brevitas's export_qonnx, imported, and checked with
``verify --against`` (qonnx's executor) on test images and random inputs.

    PYTHONPATH=. python benchmarks/import_cnv.py [--steps 60] [--samples 64] [--target host]

Prints the sizes, the times and the bits compared as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cnv() -> nn.Module:
    import brevitas.nn as qnn
    from brevitas.quant import SignedBinaryActPerTensorConst as A
    from brevitas.quant import SignedBinaryWeightPerTensorConst as W

    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [
            qnn.QuantConv2d(cin, cout, 3, bias=False, weight_quant=W),
            nn.BatchNorm2d(cout),
            qnn.QuantIdentity(act_quant=A),
        ]

    def fc(cin: int, cout: int, act: bool = True) -> list[nn.Module]:
        mods: list[nn.Module] = [qnn.QuantLinear(cin, cout, bias=False, weight_quant=W), nn.BatchNorm1d(cout)]
        return mods + ([qnn.QuantIdentity(act_quant=A)] if act else [])

    return nn.Sequential(
        *conv(3, 64), *conv(64, 64), nn.MaxPool2d(2),
        *conv(64, 128), *conv(128, 128), nn.MaxPool2d(2),
        *conv(128, 256), *conv(256, 256),
        nn.Flatten(), *fc(256, 512), *fc(512, 512), *fc(512, 10, act=False),
    )  # fmt: skip


def data(n: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    from ebnn_codegen.data.mnist import load

    x, y = load("fashion-mnist", split, n=n)
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(x, 3, axis=1)), y


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--target", default="host")
    args = ap.parse_args()
    import ebnn_codegen as E
    from ebnn_codegen import api, importers
    from ebnn_codegen.importers.verify import verify_against

    torch.manual_seed(0)
    x, y = data(4096, "train")
    xt, _ = data(args.samples, "test")
    model = cnv()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xf, yt = torch.from_numpy(x).float() / 255, torch.from_numpy(y)
    t0 = time.perf_counter()
    model.train()
    for _ in range(args.steps):
        idx = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(xf[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    t_train = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "cnv_w1a1.onnx"
        from brevitas.export import export_qonnx

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_qonnx(model, torch.zeros(1, 3, 32, 32), export_path=str(src), dynamo=False)
        t_export = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = importers.import_model(src, input_scale=1 / 255)
        t_import = time.perf_counter() - t0
        pt = Path(tmp) / "cnv_w1a1.pt"
        E.save(result.model, pt)
        inputs = np.concatenate([xt, api.random_inputs((3, 32, 32), max(2, args.samples // 4), seed=1)])
        t0 = time.perf_counter()
        rep = verify_against(pt, src, inputs, target=args.target)
        t_verify = time.perf_counter() - t0
        report = api.report(pt)
    out = {
        "model": "CNV-W1A1-shaped (Brevitas, QONNX), 32x32x3",
        "train_steps": args.steps,
        "binary_macs": report["totals"]["binary_macs"],
        "flash_bytes": report["totals"]["flash_bytes"],
        "workspace_bytes": report["totals"]["workspace_bytes"],
        "blocks": [b["type"] for b in report["blocks"]],
        "samples": rep.samples,
        "target": rep.target,
        "bits_compared": rep.bits_compared,
        "bit_mismatches": rep.bit_mismatches,
        "block_mismatches": rep.details["block_mismatches"],
        "argmax_mismatches": rep.argmax_mismatches,
        "score_max_error": rep.score_max_error,
        "ok": rep.ok,
        "seconds": {
            "train": round(t_train, 1),
            "export": round(t_export, 1),
            "import": round(t_import, 1),
            "verify": round(t_verify, 1),
        },  # fmt: skip
    }
    print(json.dumps(out, indent=1))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
