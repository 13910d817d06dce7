"""``export --format qonnx``: qonnx's executor reproduces the C bit for bit; export -> import round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ebnn_codegen import api
from ebnn_codegen.cli import main as cli_main

pytest.importorskip("qonnx")
import onnx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "examples" / "models"


def _c_files(folder: Path) -> dict[str, bytes]:
    """The generated C of an export (its README names the checkpoint file, so it is left out)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".c", ".h")}


@pytest.mark.parametrize("name", ["mnist_small", "mnist_uno"])
def test_shipped_model_round_trip(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pt = SHIPPED / f"{name}.pt"
    assert cli_main(["-q", "export", str(pt), "--format", "qonnx", "-o", str(tmp_path / "q")]) == 0
    src = tmp_path / "q" / f"{name}.onnx"
    model = onnx.load(str(src))
    ops = {n.op_type for n in model.graph.node}
    assert {"BipolarQuant", "Conv", "BatchNormalization", "Gemm"} <= ops and ops <= {
        "BipolarQuant", "Conv", "MaxPool", "BatchNormalization", "Gemm", "Flatten"
    }  # fmt: skip
    assert all(vi.type.tensor_type.HasField("shape") for vi in model.graph.value_info)  # shapes inferred
    # qonnx's executor on the exported graph == our C, bit for bit, on real-like and extreme inputs
    capsys.readouterr()
    assert cli_main(["-q", "verify", str(pt), "--against", str(src), "--samples", "12"]) == 0
    assert "mismatches: 0" in capsys.readouterr().out
    # import it again: the same C, byte for byte (the provenance names the constants' hash)
    back = tmp_path / "back.pt"
    assert cli_main(["-q", "import", str(src), "-o", str(back)]) == 0
    assert cli_main(["-q", "export", str(pt), "-o", str(tmp_path / "c1")]) == 0
    assert cli_main(["-q", "export", str(back), "-o", str(tmp_path / "c2")]) == 0
    one, two = _c_files(tmp_path / "c1"), _c_files(tmp_path / "c2")
    assert one.keys() == two.keys() and len(one) >= 4
    for fname in one:
        assert one[fname] == two[fname], fname
    # and the IR is identical, array for array
    g1, g2 = api.compile(pt), api.compile(back)
    for b1, b2 in zip(g1.blocks, g2.blocks):
        assert np.array_equal(b1.packed_weights, b2.packed_weights)
        if not b1.is_exit:
            assert np.array_equal(b1.threshold, b2.threshold) and np.array_equal(b1.direction, b2.direction)
    assert np.array_equal(g1.exit.score_mul, g2.exit.score_mul) and np.array_equal(g1.exit.score_add, g2.exit.score_add)


def test_export_qonnx_onto_a_file_is_refused(tmp_path: Path, capsys) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert cli_main(["-q", "export", str(SHIPPED / "mnist_small.pt"), "--format", "qonnx", "-o", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err
