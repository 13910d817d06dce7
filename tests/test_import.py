"""Importing ONNX / QONNX models: six trained source models, exactness at thresholds, refusals.

Every source model is trained for a few seconds, exported (torch.onnx.export or Brevitas's
export_qonnx), imported, and checked with ``verify --against``: every hidden block's ±1 output
and the class of the generated C equal the source model run by its own runtime (onnxruntime or
qonnx's executor), on real images and random uint8 inputs. The same check runs on an emulated
Cortex-M4 (tests marked ``emulator``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import require_tools
from onnx import TensorProto, helper, numpy_helper

import ebnn_codegen as E
from ebnn_codegen import api, importers, targets
from ebnn_codegen.cli import main as cli_main
from ebnn_codegen.importers.verify import verify_against

pytest.importorskip("onnxruntime")
import import_models as IM  # noqa: E402

MODELS = list(IM.BUILDERS)
_BUILT: dict[str, tuple[Path, float, float, np.ndarray]] = {}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("import_sources")


def built(name: str, folder: Path) -> tuple[Path, float, float, np.ndarray]:
    """Train and export a source model once per test session."""
    if name not in _BUILT:
        if name == "brevitas_tfc":
            try:
                IM.load("mnist", "test", n=1, download=False)
            except Exception as exc:  # the data are fetched by scripts/setup.sh
                pytest.fail(f"MNIST is not available ({exc}); run scripts/setup.sh")
        _BUILT[name] = IM.BUILDERS[name](folder)
    return _BUILT[name]


def imported(name: str, folder: Path) -> tuple[Path, Path, np.ndarray]:
    """(source .onnx, imported checkpoint, real uint8 test images in the checkpoint's input shape)."""
    src, scale, offset, xt = built(name, folder)
    pt = folder / f"{name}.pt"
    if not pt.exists():
        result = importers.import_model(src, input_scale=scale, input_offset=offset)
        E.save(result.model, pt)
    model = E.load(pt)
    x = np.ascontiguousarray(xt[:16].reshape(-1, *model.spec.input_shape))
    return src, pt, x


@pytest.mark.parametrize("name", MODELS)
def test_source_model_bit_exact_on_host(name: str, folder: Path) -> None:
    src, pt, x = imported(name, folder)
    x = np.concatenate([x, api.random_inputs(x.shape[1:], 8, seed=1)])
    rep = verify_against(pt, src, x)
    assert rep.ok, rep.summary()
    assert rep.bit_mismatches == 0 and rep.argmax_mismatches == 0
    assert rep.blocks_compared == len(E.load(pt).blocks) >= 2
    assert rep.bits_compared > 1000 and rep.torch.bits_compared == rep.bits_compared
    assert rep.details["source_argmax_agreement"] == 1.0


@pytest.mark.emulator
@pytest.mark.parametrize("name", MODELS)
def test_source_model_bit_exact_on_cortex_m4(name: str, folder: Path) -> None:
    t = targets.get("cortex-m4")
    require_tools(*t.tools, package=t.packages)
    src, pt, x = imported(name, folder)
    rep = verify_against(pt, src, x[:3], target="cortex-m4")
    assert rep.ok, rep.summary()
    assert rep.samples == 3 and rep.bit_mismatches == 0


def test_cli_import_verify_and_every_command(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, scale, offset, xt = built("plain_where", folder)
    pt = tmp_path / "m.pt"
    assert cli_main(["-q", "import", str(src), "-o", str(pt), "--input-scale", repr(scale)]) == 0
    assert "plain_where.onnx (onnx) ->" in capsys.readouterr().out
    xs = tmp_path / "x.npy"
    np.save(xs, xt[:20])
    assert (
        cli_main(
            ["-q", "verify", str(pt), "--against", str(src), "--input", str(xs), "--json", str(tmp_path / "r.json")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("PASS: 20 samples on host") and "mismatches: 0" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["ok"] and rep["bit_mismatches"] == 0 and rep["bits_compared"] == 20 * (16 * 9 + 32 * 9 + 64)
    # the checkpoint is an ordinary one: plain verify, export, report, run
    assert cli_main(["-q", "verify", str(pt), "--samples", "8"]) == 0
    assert cli_main(["-q", "export", str(pt), "-o", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "plain_where.c").exists()
    assert cli_main(["report", str(pt), "--json"]) == 0
    assert cli_main(["-q", "run", str(pt), "--input", str(xs), "--output", str(tmp_path / "o.npz")]) == 0
    capsys.readouterr()
    # a different source file is refused (its tensors need not match)
    other, *_ = built("plain_sign", folder)
    assert cli_main(["-q", "verify", str(pt), "--against", str(other)]) == 2
    assert "not the file this checkpoint was imported from" in capsys.readouterr().err


def test_verify_against_detects_a_changed_threshold(folder: Path, tmp_path: Path) -> None:
    """The comparison can fail: move one threshold of block 1 onto an accumulator value it reaches."""
    import torch

    src, pt, x = imported("plain_where", folder)
    model = E.load(pt)
    with torch.no_grad():
        acc = model.blocks[1].conv(model.blocks[0](torch.from_numpy(x).float()))[:, 0].numpy().astype(int)
    act = model.blocks[1].act
    t, up = int(act.threshold[0]), int(act.direction[0]) > 0
    # the output of channel 0 changes for every accumulator between the old and the new threshold
    reached = acc[acc >= t] if up else acc[acc <= t]
    new = int(np.min(reached)) + 1 if up else int(np.max(reached)) - 1
    act.threshold[0] = new
    bad = tmp_path / "bad.pt"
    E.save(model, bad)
    rep = verify_against(bad, src, x)
    assert not rep.ok and rep.torch.ok
    moved = (acc >= t) & (acc < new) if up else (acc <= t) & (acc > new)
    assert rep.details["block_mismatches"][:2] == [0, int(moved.sum())] and moved.sum() > 0
    assert rep.first_mismatch.startswith("block 1 at (sample, channel, ...) = (") and ", 0, " in rep.first_mismatch


# ------------------------------------------------------------------------------------------
# exactness at thresholds: hand-made graphs whose thresholds sit exactly on integers
# ------------------------------------------------------------------------------------------


def _const(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def tie_graph(
    path: Path,
    *,
    act: str = "where_ge",
    group: int = 1,
    pad1: int = 0,
    softmax: bool = False,
    w1: np.ndarray | None = None,
    transpose: bool = False,
) -> Path:
    """x (1,1,16,16) -> 1x1 conv (±1) -> ±0.5 * acc ± 50 (zero at acc = ±100 exactly) -> sign
    -> 2x2 conv pad 1 -> BatchNormalization (γ = ±1, integer means, eps 0) -> Where(Greater) -> MaxPool
    -> Flatten -> Gemm + bias."""
    f1, f2 = 4, 6
    if w1 is None:
        w1 = np.array([1, 1, -1, -1], np.float32).reshape(f1, 1, 1, 1)
    rng = np.random.default_rng(0)
    w2 = np.where(rng.random((f2, f1 // group, 2, 2)) < 0.5, -1.0, 1.0)
    w3 = np.where(rng.random((10, f2 * 8 * 8)) < 0.5, -1.0, 1.0)
    inits = [
        _const("w1", w1), _const("m1", np.array([0.5, -0.5, 0.5, -0.5]).reshape(1, f1, 1, 1)),
        _const("a1", np.array([-50.0, 50.0, 50.0, 50.0]).reshape(1, f1, 1, 1)),
        _const("w2", w2), _const("gamma", [1, -1, 1, -1, -1, 1]), _const("beta", np.zeros(f2)),
        _const("mean", [0, 1, -2, 3, 0, -1]), _const("var", np.ones(f2)), _const("zero", 0.0),
        _const("one", 1.0), _const("minus", -1.0), _const("w3", w3), _const("b3", rng.normal(size=10)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="Conv_1", kernel_shape=[1, 1], pads=[pad1] * 4),
        helper.make_node("Mul", ["c1", "m1"], ["s1"], name="Mul_1"),
        helper.make_node("Add", ["s1", "a1"], ["y1"], name="Add_1"),
    ]
    if act == "sign":
        nodes.append(helper.make_node("Sign", ["y1"], ["h1"], name="Sign_1"))
    else:
        nodes += [
            helper.make_node("GreaterOrEqual", ["y1", "zero"], ["g1"], name="Ge_1"),
            helper.make_node("Where", ["g1", "one", "minus"], ["h1"], name="Where_1"),
        ]
    nodes += [
        helper.make_node(
            "Conv", ["h1", "w2"], ["c2"], name="Conv_7", kernel_shape=[2, 2], pads=[1, 1, 1, 1], group=group
        ),
        helper.make_node(
            "BatchNormalization", ["c2", "gamma", "beta", "mean", "var"], ["n2"], name="BN_2", epsilon=0.0
        ),
        helper.make_node("Greater", ["n2", "zero"], ["g2"], name="Gt_2"),
        helper.make_node("Where", ["g2", "one", "minus"], ["h2"], name="Where_2"),
        helper.make_node("MaxPool", ["h2"], ["p2"], name="Pool_2", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    flat_in = "p2"
    if transpose:
        nodes.append(helper.make_node("Transpose", ["p2"], ["t2"], name="Transpose_3", perm=[0, 2, 3, 1]))
        flat_in = "t2"
    nodes.append(helper.make_node("Flatten", [flat_in], ["f"], name="Flatten_3", axis=1))
    out = "scores_raw" if softmax else "scores"
    nodes.append(helper.make_node("Gemm", ["f", "w3", "b3"], [out], name="Gemm_4", transB=1))
    if softmax:
        nodes.append(helper.make_node("Softmax", ["scores_raw"], ["scores"], name="Softmax_5", axis=1))
    graph = helper.make_graph(
        nodes,
        "ties",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_thresholds_exact_at_every_accumulator_value(tmp_path: Path) -> None:
    """Every pixel value 0..255 reaches the first block (thresholds at exactly 100); the second
    block's thresholds sit on integers with both directions and the pool after the sign."""
    src = tie_graph(tmp_path / "ties.onnx")
    result = importers.import_model(src)
    notes = result.blocks
    assert notes[1]["pool"] == "after sign" and notes[1]["flipped_channels"] == 3  # the γ < 0 channels
    model = result.model
    # 0.5 acc - 50 >= 0: acc >= 100; -0.5 acc + 50 >= 0: acc <= 100; 0.5 acc + 50 >= 0: acc >= -100
    assert model.blocks[0].act.threshold.tolist() == [100, 100, -100, 100]
    assert model.blocks[0].act.direction.tolist() == [1, -1, 1, -1]
    pt = tmp_path / "ties.pt"
    E.save(model, pt)
    ramp = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    x = np.concatenate([ramp, ramp[:, :, ::-1], api.random_inputs((1, 16, 16), 30, seed=3)])
    rep = verify_against(pt, src, x)
    assert rep.ok, rep.summary()
    assert rep.bits_compared == len(x) * (4 * 256 + 6 * 64)


def test_onnx_sign_zero_is_refused_where_reachable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tie_graph(tmp_path / "sign.onnx", act="sign")
    assert cli_main(["-q", "import", str(src), "-o", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith('error: node "Sign_1" (Sign): the block\'s output is not binary')
        and "channel 2 gives 0 at accumulator -100" in err
    )
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group": 2}, 'error: node "Conv_7" (Conv): group=2 is not supported'),
        ({"softmax": True}, 'error: node "Softmax_5" (Softmax): op type Softmax is not supported'),
        ({"transpose": True}, 'error: node "Transpose_3" (Transpose): op type Transpose is not supported'),
        (
            {"w1": np.array([1, 1, 1, -1] * 8 + [0.5, 1, -1, 1], np.float32).reshape(4, 1, 3, 3), "pad1": 1},
            'error: node "Conv_1" (Conv): weights of filter 3 are not binary: magnitudes 1 and 0.5',
        ),
        ({"w1": np.array([1, 0, -1, -1], np.float32).reshape(4, 1, 1, 1)}, "has a zero weight"),
    ],
)
def test_refusals_name_node_op_and_reason(tmp_path: Path, capsys, kwargs: dict, message: str) -> None:
    src = tie_graph(tmp_path / "bad.onnx", **kwargs)
    out = tmp_path / "m.pt"
    assert cli_main(["-q", "import", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err.splitlines()[0], err
    assert not out.exists()


def test_input_offset_with_padding_refused(tmp_path: Path, capsys) -> None:
    src, *_ = built_plain_sign_like(tmp_path)
    assert cli_main(["-q", "import", str(src), "-o", str(tmp_path / "m.pt"), "--input-offset", "-0.5"]) == 2
    err = capsys.readouterr().err
    assert "padding with an input offset is not exact" in err


def built_plain_sign_like(tmp_path: Path) -> tuple[Path]:
    """The tie graph with a padded 1x1... a padded first convolution needs a 3x3 kernel: build one."""
    w1 = np.where(np.random.default_rng(1).random((4, 1, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32)
    src = tie_graph(tmp_path / "pad.onnx", w1=w1, pad1=1)
    return (src,)


def test_bad_files_and_arguments(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all \x00\xff")
    assert cli_main(["-q", "import", str(junk), "-o", str(tmp_path / "m.pt")]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert cli_main(["-q", "import", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "m.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    src = tie_graph(tmp_path / "ok.onnx")
    assert cli_main(["-q", "import", str(src), "-o", str(tmp_path / "m.pt"), "--input-scale", "nan"]) == 2
    assert cli_main(["-q", "import", str(src), "-o", str(tmp_path / "m.pt"), "--input-scale", "0"]) == 2
    assert cli_main(["-q", "import", str(src), "-o", str(tmp_path / "nodir" / "m.pt")]) == 2
    assert not (tmp_path / "m.pt").exists()
