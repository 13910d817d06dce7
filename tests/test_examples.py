"""The examples run end to end (on the 8x8 digits, so that CI stays fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_mnist_example_end_to_end(tmp_path) -> None:
    cfg = {
        "name": "digits_tiny",
        "input": [1, 8, 8],
        "layers": [
            {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1, "pool": {"kernel": 2, "stride": 2}},
            {"type": "blinear", "out_features": 24},
            {"type": "exit", "classes": 10},
        ],
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "train_mnist.py"),
            "--dataset",
            "digits",
            "--config",
            str(tmp_path / "cfg.json"),
            "--epochs",
            "3",
            "--threads",
            "1",
            "-o",
            str(tmp_path / "m.pt"),
            "--export",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert out["bit_exact"] is True
    assert out["test_accuracy_host_c"] == out["test_accuracy_torch"]
    assert out["test_accuracy_host_c"] > 0.5  # 3 epochs on 1,437 images: well above chance (0.1)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "digits_tiny.c",
        "digits_tiny.h",
        "ebnn_runtime.c",
        "ebnn_runtime.h",
    ]
    assert "[epoch 3/3]" in proc.stderr  # progress display
