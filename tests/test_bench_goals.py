"""benchmarks/run.py states the Speed II goals from its measurements: met, not met, or not
measured in this run (a quick run on 1,000 images or a model left out says so)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_module():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fast(**kw):
    return {"fast": kw}


@pytest.mark.quick
def test_goals_met_missed_and_unmeasured():
    run = _run_module()
    results = {
        "models": {
            "mnist_uno": {
                "targets": {
                    "avr": _fast(cycles=468_452, blocks=[{"type": "conv", "cycles": 1}]),
                    "cortex-m4": _fast(binary_blocks_per_mac=0.29),
                    "rv32imc": _fast(binary_blocks_per_mac=0.31),
                    "cortex-m0": _fast(binary_blocks_per_mac=0.5),
                }
            },
            "mnist_uno_best": {
                "test_samples": 10_000,
                "accuracy_host_c": 0.9851,
                "bit_exact_vs_torch": True,
                "targets": {"avr": _fast(cycles=800_000)},
            },
            "fashion_m4": {"test_samples": 1_000, "accuracy_host_c": 0.95, "targets": {}},
        }
    }
    got = {g["goal"].split()[0]: g["met"] for g in run.goals(results)}
    assert got == {"1": True, "2": True, "3": False, "4": None}
    results["models"]["mnist_uno_best"]["accuracy_host_c"] = 0.9849
    results["models"]["mnist_uno"]["targets"]["avr"]["fast"]["cycles"] = 480_001
    got = {g["goal"].split()[0]: g["met"] for g in run.goals(results)}
    assert got["1"] is False and got["2"] is False
