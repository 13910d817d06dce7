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
        "README.md",
        "digits_tiny.c",
        "digits_tiny.h",
        "ebnn_runtime.c",
        "ebnn_runtime.h",
    ]
    assert "[epoch 3/3]" in proc.stderr  # progress display


def test_sweep_ddnn_example(tmp_path) -> None:
    """examples/sweep_ddnn.py trains and evaluates each config, and reports a failed config without losing the rest."""
    tiny = {
        "devices": 6,
        "classes": 10,
        "device": {
            "input": [1, 3, 4],
            "layers": [{"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 10}],
        },
        "local": {"aggregator": "max"},
        "cloud": {
            "aggregator": "grid",
            "grid": [3, 2],
            "layers": [{"type": "blinear", "out_features": 16}, {"type": "exit", "classes": 10}],
        },
    }
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**tiny, "name": "sweep_good", "training": {"epochs": 1, "batch_size": 32}}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**tiny, "name": "sweep_bad", "devices": 7}))
    out = tmp_path / "sw"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "sweep_ddnn.py"),
            str(good),
            str(bad),
            "--dataset",
            "digits-tiles",
            "--limit",
            "200",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["config"] for r in results] == [str(good), str(bad)]
    ok, failed = results
    assert failed["error"].startswith("ConfigError") and "7 sources" in failed["error"]
    for key in ("overall_accuracy", "local_exit_fraction", "worst_single_failure_accuracy", "threshold"):
        assert key in ok
    assert 0.0 <= ok["overall_accuracy"] <= 1.0 and len(ok["device_failure"]) == 6
    assert (out / "sweep_good.pt").is_file() and len(ok["val_curve"]) == 1
    assert "sweep_good" in proc.stderr and "error:" in proc.stderr
