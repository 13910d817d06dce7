"""The CLI contract, in-process through ``main(argv)``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import random_model

import ebnn_codegen as E
from ebnn_codegen.cli import main

pytestmark = pytest.mark.quick  # the pre-commit subset (pytest -m quick)


@pytest.fixture
def ckpt(tmp_path, tiny_config):
    path = tmp_path / "tiny.pt"
    E.save(random_model(tiny_config, seed=5, extreme=True), path)
    return path


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert E.__version__ in capsys.readouterr().out


@pytest.mark.parametrize("cmd", ["export", "run", "verify", "report", "bench", "targets", "info"])
def test_help_on_every_subcommand(cmd, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main([cmd, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_export_writes_c_with_provenance(ckpt, tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["-q", "export", str(ckpt), "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "ebnn_runtime.c", "ebnn_runtime.h", "tiny.c", "tiny.h"]
    head = (out / "tiny.c").read_text().splitlines()[:5]
    assert any("ebnn-codegen " + E.__version__ in line for line in head)
    assert any("constants sha256:" in line for line in head)
    assert main(["-q", "export", str(ckpt), "-o", str(tmp_path / "o2"), "--name", "other"]) == 0
    assert (tmp_path / "o2" / "other.h").exists()


def test_run_output_contract(ckpt, tmp_path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (7, 1, 9, 7), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    assert main(["-q", "run", str(ckpt), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "o.npz")]) == 0
    out = np.load(tmp_path / "o.npz")
    assert out["pred"].dtype == np.int64 and out["pred"].shape == (7,)
    assert out["scores"].dtype == np.int32 and out["scores"].shape == (7, 4)
    assert float(out["score_scale"]) > 0
    model = E.load(ckpt)
    scores, layers = E.api.torch_outputs(model, x)
    for i, layer in enumerate(layers):
        got = out[f"layer_{i}"]
        assert got.dtype == np.int8 and got.shape == layer.shape
        assert np.array_equal(got, layer)
    assert np.allclose(
        out["scores"] / out["score_scale"], scores, atol=float(E.api.score_tolerance(E.compile(model)).max())
    )


def test_verify_passes_and_prints_summary(ckpt, capsys, tmp_path) -> None:
    assert main(["verify", str(ckpt), "--samples", "40", "--json", str(tmp_path / "v.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PASS") and "mismatches: 0" in out
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["ok"] is True and data["bit_mismatches"] == 0


def test_verify_fails_on_a_mismatch(ckpt, monkeypatch, capsys) -> None:
    """If the C disagreed with torch, verify must exit 1 (checked by corrupting one threshold)."""
    from ebnn_codegen import api

    real = api.compile

    def corrupt(*a, **k):
        g = real(*a, **k)
        from ebnn_codegen.ir import CONST

        b = g.blocks[0]
        moved = b.direction != CONST
        b.threshold[moved] += b.acc_bound // 8  # a wrong fold
        return g

    monkeypatch.setattr(api, "compile", corrupt)
    assert main(["verify", str(ckpt), "--samples", "64"]) == 1
    assert capsys.readouterr().out.startswith("FAIL")


def test_report_json_keys(ckpt, capsys) -> None:
    assert main(["report", str(ckpt), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [b["type"] for b in rep["blocks"]] == ["conv", "bconv", "blinear", "exit"]
    for b in rep["blocks"]:
        assert {"type", "output_shape", "binary_macs", "weight_bytes", "threshold_bytes", "buffer_bytes"} <= set(b)
    assert {"flash_bytes", "static_ram_bytes", "binary_macs"} <= set(rep["totals"])
    assert rep["totals"]["binary_macs"] == sum(b["binary_macs"] for b in rep["blocks"])


def test_user_errors_exit_2_with_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["export", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "Traceback" not in "".join(err)
    assert not (tmp_path / "out").exists()
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["report"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_bench_host(ckpt, capsys) -> None:
    assert main(["bench", str(ckpt), "--json", "--samples", "16"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"] == "host" and data["binary_macs"] > 0 and data["us_per_inference"] > 0
