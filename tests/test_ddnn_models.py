"""The shipped DDNN models load, and reproduce the numbers in docs/ddnn.md.

The expected numbers are the ``evaluation`` of ``docs/img/ddnn_<dataset>_sweep.json``
(written by ``ebnn-gen ddnn sweep``); the test re-runs the staged evaluation on
the full test split with the devices as generated C and compares exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import strict_tools

import ebnn_codegen as E
from ebnn_codegen.ddnn import datasets, metrics
from ebnn_codegen.ddnn.model import DDNN

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "mnist-tiles": ROOT / "examples" / "models" / "ddnn_mnist_tiles.pt",
    "mvmc-like": ROOT / "examples" / "models" / "ddnn_mvmc_like.pt",
}


@pytest.mark.parametrize("dataset", sorted(MODELS))
def test_shipped_model_loads(dataset):
    model = E.load(MODELS[dataset])
    assert isinstance(model, DDNN)
    assert model.config["messages"]["score_frac_bits"] is not None
    assert model.config["meta"]["training"]["dataset"] == dataset


@pytest.mark.slow
@pytest.mark.mnist
@pytest.mark.parametrize("dataset", sorted(MODELS))
def test_shipped_model_reproduces_the_documented_numbers(dataset):
    expected = json.loads((ROOT / "docs" / "img" / f"ddnn_{dataset.replace('-', '_')}_sweep.json").read_text())[
        "evaluation"
    ]
    try:
        data = datasets.load(dataset, "test")
    except E.CodegenError as exc:  # the MNIST data cannot be fetched here
        if strict_tools():
            pytest.fail(f"MNIST is required on CI: {exc}")
        pytest.skip(str(exc))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = metrics.evaluate(E.load(MODELS[dataset]), data, devices="c", with_scaling=False)
    finally:
        torch.set_num_threads(before)
    for key in ("overall_accuracy", "local_exit_fraction", "exit_accuracy", "device_accuracy", "bytes_per_sample"):
        assert got[key] == expected[key], key
    assert got["device_failure"] == expected["device_failure"]
    assert got["message_errors"] == {}
