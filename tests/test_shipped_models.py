"""Every shipped checkpoint (examples/models) carries its training record: the command that made it,
the package and PyTorch versions and the SHA-256 of its training data; the records written after the
fact (scripts/record_training.py) match today's data."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from conftest import strict_tools

import ebnn_codegen as E
from ebnn_codegen.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "examples" / "models").glob("*.pt"))


def record_of(path: Path) -> dict:
    return (read_checkpoint(path)["config"].get("meta") or {}).get("training") or {}


@pytest.mark.quick
def test_the_shipped_models_are_found():
    """The records below are checked on every checkpoint in examples/models (a new one needs its record)."""
    names = {p.name for p in MODELS}
    assert {
        "ddnn_mnist_tiles.pt",
        "ddnn_mvmc_like.pt",
        "fashion_m4.pt",
        "mnist_small.pt",
        "mnist_uno.pt",
        "mnist_uno_best.pt",
        "rgb32_device.pt",
    } <= names


@pytest.mark.quick
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_every_shipped_model_carries_its_training_record(path):
    rec = record_of(path)
    assert rec, f"{path.name}: no meta.training"
    assert isinstance(rec.get("command"), str) and re.match(r"^(ebnn-gen|python examples/)\S* ", rec["command"])
    assert f"{path.name}" in rec["command"] or rec["command"].startswith("python examples/sweep_mnist.py")
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", rec.get("package_version") or ""), rec
    assert re.fullmatch(r"[0-9a-f]{64}", rec.get("data_sha256") or ""), rec
    assert "torch_version" in rec
    if rec["torch_version"] is None:  # a build nobody wrote down: the record must say which and why
        assert rec.get("torch_device", "cpu") != "cpu" and rec.get("torch_version_note"), rec
    else:
        assert re.fullmatch(r"\d+\.\d+\.\d+", rec["torch_version"]), rec
    # a model made in two steps (--init, --epochs 0) carries the first step's record with its epochs
    assert rec.get("dataset") and rec.get("threads") and (rec.get("epochs") or (rec.get("init") or {}).get("epochs")), (
        rec
    )


@pytest.mark.slow
@pytest.mark.mnist
def test_records_written_afterwards_match_todays_data(capsys):
    """scripts/record_training.py --check: the data hashes of mnist_uno and ddnn_mnist_tiles are today's
    data, and the rest of their records is what the script writes (the weights are not read)."""
    spec = importlib.util.spec_from_file_location("record_training", ROOT / "scripts" / "record_training.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    paths = [str(ROOT / "examples" / "models" / n) for n in ("ddnn_mnist_tiles.pt", "mnist_uno.pt")]
    try:
        script.mnist_hash()
    except E.CodegenError as exc:  # the MNIST data cannot be fetched here
        if strict_tools():
            pytest.fail(f"MNIST is required on CI: {exc}")
        pytest.skip(str(exc))
    assert script.main(["--check", *paths]) == 0, capsys.readouterr()
    assert capsys.readouterr().out.count("ok: ") == 2
