"""DDNN: config, joint loss, exit rule, messages, staged runtime (C = torch), gateway C, CLI.

Everything runs on tiny models over ``digits-tiles`` (scikit-learn's 8×8
digits cut into 3×2 tiles of 3×4 pixels), trained for a few seconds.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import ebnn_codegen as E
from ebnn_codegen import bits
from ebnn_codegen.cli import main
from ebnn_codegen.ddnn import datasets, exits, messages, metrics
from ebnn_codegen.ddnn import train as tr
from ebnn_codegen.ddnn.model import DDNN
from ebnn_codegen.ddnn.runtime import StagedRuntime, message_layout
from ebnn_codegen.errors import ConfigError

TINY = {
    "name": "tiny_ddnn",
    "devices": 6,
    "classes": 10,
    "device": {
        "input": [1, 3, 4],
        "layers": [
            {"type": "conv", "out_channels": 5, "kernel": 3, "padding": 1},
            {"type": "exit", "classes": 10},
        ],
    },
    "local": {"aggregator": "concat"},
    "cloud": {
        "aggregator": "concat",
        "layers": [{"type": "bconv", "out_channels": 8, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 10}],
    },
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.01},
}

# `ddnn eval --json` keys that checks outside the project rely on (issue contract)
EVAL_CONTRACT_KEYS = (
    "overall_accuracy",
    "local_exit_fraction",
    "exit_accuracy",
    "device_accuracy",
    "bytes_per_sample",
    "device_failure",
)

EDGE = {
    **copy.deepcopy(TINY),
    "name": "tiny_edge",
    "local": {"aggregator": "max"},
    "edge": {
        "groups": [[0, 1, 2], [3, 4, 5]],
        "aggregator": "concat",
        "layers": [{"type": "bconv", "out_channels": 6, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 10}],
    },
    "cloud": {
        "aggregator": "max",
        "layers": [{"type": "blinear", "out_features": 16}, {"type": "exit", "classes": 10}],
    },
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and much faster on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained(config: dict, n: int = 400, seed: int = 0) -> tuple[DDNN, datasets.MultiView]:
    torch.manual_seed(seed)
    model = DDNN(config)
    data = datasets.load("digits-tiles", "train", n=n)
    tr.train(model, data)
    tr.calibrate_messages(model, data)
    return model, datasets.load("digits-tiles", "test", n=120)


@pytest.fixture(scope="module")
def tiny(one_thread):
    return _trained(TINY)


@pytest.fixture(scope="module")
def edge(one_thread):
    return _trained(EDGE, seed=1)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "patch, text",
    [
        ({"devices": 0}, "config.devices"),
        ({"training": {"recalibrate_bn": "yes"}}, "config.training.recalibrate_bn"),
        ({"training": {"absent_devices": [6]}}, "config.training.absent_devices[0]"),
        ({"training": {"absent_devices": [1, 1]}}, "config.training.absent_devices lists a device twice"),
        ({"training": {"absent_devices": list(range(6))}}, "config.training.absent_devices leaves no device"),
        ({"training": {"absent_devices": 2}}, "config.training.absent_devices must be a list"),
        ({"local": {"aggregator": "median"}}, "config.local.aggregator"),
        (
            {"cloud": {"layers": [{"type": "conv", "out_channels": 2, "kernel": 1}, {"type": "exit", "classes": 10}]}},
            "config.cloud.layers[0]",
        ),
        ({"cloud": {"layers": [{"type": "exit", "classes": 3}]}}, "config.cloud: exit has 3 classes"),
        ({"training": {"epochs": -1}}, "config.training.epochs"),
        ({"thresholds": {"local": 1.5}}, "config.thresholds.local"),
        ({"edge": {"groups": [[0, 1], [1, 2, 3, 4, 5]], "layers": []}}, "more than one group"),
        ({"feature_block": 3}, "config.feature_block"),
        ({"colour": 1}, "unknown field 'colour'"),
        (
            {"cloud": {"aggregator": "grid", "grid": [2, 2], "layers": [{"type": "exit", "classes": 10}]}},
            "4 cells for 6",
        ),
        ({"cloud": {"aggregator": "max", "grid": [3, 2], "layers": [{"type": "exit", "classes": 10}]}}, "only used by"),
    ],
)
def test_config_errors_name_the_field(patch, text):
    cfg = {**copy.deepcopy(TINY), **patch}
    with pytest.raises(ConfigError, match=text.replace("[", r"\[").replace("]", r"\]")):
        DDNN(cfg)


def _mutate(obj, rng):
    """A copy of a JSON-like object with one random value replaced by junk."""
    junk = [None, -1, 0, 10**9, 1.5, "x", [], {}, [1, 2, 3], {"a": 1}, True, float("nan"), 64, [0, 0]]
    obj = copy.deepcopy(obj)
    paths = []

    def walk(o, path):
        paths.append(path)
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, (*path, k))
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, (*path, i))

    walk(obj, ())
    path = paths[int(rng.integers(1, len(paths)))]
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = junk[int(rng.integers(len(junk)))]
    return obj


def test_config_mutations_raise_only_config_errors():
    rng = np.random.default_rng(0)
    for base in (TINY, EDGE):
        for _ in range(150):
            cfg = _mutate(base, rng)
            try:
                DDNN(cfg)
            except ConfigError:
                pass


def test_config_is_normalised_and_json():
    m = DDNN(TINY)
    assert m.config["loss_weights"]["cloud"] == 1.0 and m.config["feature_block"] == 0
    assert json.loads(json.dumps(m.config)) == m.config
    assert DDNN(m.config).config == m.config


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("config", [TINY, EDGE], ids=["cc", "edge"])
def test_joint_loss_reaches_every_exit(config):
    torch.manual_seed(0)
    model = DDNN(config).train()
    data = datasets.load("digits-tiles", "train", n=64)
    x = torch.from_numpy(data.x).float()
    out = model(x)
    assert set(out) == {"device", "local", "cloud"} | ({"edge"} if config.get("edge") else set())
    loss, parts = tr.joint_loss(
        out, torch.from_numpy(data.y), torch.from_numpy(data.y_views), model.config["loss_weights"]
    )
    assert set(parts) == set(out)
    loss.backward()
    groups = {f"device{d}": model.device(d) for d in range(6)} | {"cloud": model.cloud}
    if model.spec.local_aggregator == "concat":
        groups["local"] = model.local
    if model.edges is not None:
        groups |= {f"edge{g}": e for g, e in enumerate(model.edges)}
    for name, module in groups.items():
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"no gradient reaches {name}"


def test_absent_views_are_ignored_in_the_device_loss():
    torch.manual_seed(0)
    model = DDNN(TINY).train()
    data = datasets.load("digits-tiles", "train", n=32)
    out = model(torch.from_numpy(data.x).float())
    y = torch.from_numpy(data.y)
    yv = torch.from_numpy(data.y_views).clone()
    yv[:, 2] = 10  # device 2 never sees the object (label outside 0..K-1)
    _, a = tr.joint_loss(out, y, yv, {})
    yv[:, 2] = 3 + 100
    _, b = tr.joint_loss(out, y, yv, {})
    assert a == b
    # only devices 0,1,3,4,5 count: the device loss is their sum
    dev = out["device"]
    want = sum(float(torch.nn.functional.cross_entropy(dev[:, d].detach(), y)) for d in (0, 1, 3, 4, 5))
    assert a["device"] == pytest.approx(want, rel=1e-5)
    # device 2's exit gets no gradient from the device loss
    model.zero_grad()
    loss, _ = tr.joint_loss(out, y, yv, {"device": 1.0, "local": 0.0, "cloud": 0.0})
    loss.backward()
    assert float(model.device(2).exit.linear.weight.grad.abs().sum()) == 0.0
    assert float(model.device(3).exit.linear.weight.grad.abs().sum()) > 0.0


def test_device_dropout_keeps_one_device():
    g = torch.Generator().manual_seed(0)
    keep = tr.device_dropout_mask(5000, 6, 0.9, g)
    assert keep.any(dim=1).all()
    assert 0.05 < keep.float().mean() < 0.3


def test_recalibrate_batch_norm_is_exact_and_deterministic(tiny):
    model, _ = tiny
    model = copy.deepcopy(model)
    data = datasets.load("digits-tiles", "train", n=300)
    blk = model.device(0).blocks[0]
    for m in model.modules():  # corrupt the running statistics: the result must not depend on them
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            m.running_mean.fill_(7.0)
            m.running_var.fill_(0.01)
    count = tr.recalibrate_batch_norm(model, data, device_dropout=0.0, batch=512)
    assert count == sum(isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d) for m in model.modules())
    assert not model.training and blk.bn.momentum == 0.1  # momentum restored
    with torch.no_grad():  # one batch: the running statistics are the exact mean and (unbiased) variance
        z = blk.conv(torch.from_numpy(data.x[:, 0]).float())
        if blk.pool is not None:
            z = blk.pool(z)
    torch.testing.assert_close(blk.bn.running_mean, z.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(blk.bn.running_var, z.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-4)
    again = copy.deepcopy(model)
    tr.recalibrate_batch_norm(model, data, device_dropout=0.3, seed=5)
    tr.recalibrate_batch_norm(again, data, device_dropout=0.3, seed=5)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # dropping devices changes what the cloud's batch norms see, not the devices' own
    assert torch.allclose(blk.bn.running_mean, z.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-4)


def test_training_recalibrates_batch_norm_when_asked():
    cfg = {**TINY, "training": {**TINY["training"], "epochs": 1, "recalibrate_bn": True}}
    data = datasets.load("digits-tiles", "train", n=200)
    torch.manual_seed(0)
    a = DDNN(cfg)
    lines: list[str] = []
    tr.train(a, data, log=lines.append)
    assert any(line.startswith("[batch norm]") for line in lines)
    torch.manual_seed(0)
    b = DDNN({**cfg, "training": {**cfg["training"], "recalibrate_bn": False}})
    tr.train(b, data)
    tr.recalibrate_batch_norm(b, data, device_dropout=b.config["training"]["device_dropout"], seed=0)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_device_dropout_never_keeps_an_absent_device():
    g = torch.Generator().manual_seed(3)
    keep = tr.device_dropout_mask(2000, 6, 0.7, g, absent=(1, 4))
    assert not keep[:, [1, 4]].any() and keep.any(dim=1).all()
    a = tr.device_dropout_mask(500, 6, 0.5, torch.Generator().manual_seed(9))
    b = tr.device_dropout_mask(500, 6, 0.5, torch.Generator().manual_seed(9), absent=())
    assert torch.equal(a, b)


def test_model_trained_without_a_device(tmp_path, capsys):
    cfg = {**TINY, "name": "tiny_wo2", "training": {**TINY["training"], "absent_devices": [2]}}
    model, test = _trained(cfg, n=300)
    assert model.config["training"]["absent_devices"] == [2]
    rep = metrics.evaluate(model, test, devices="torch")
    assert rep["failed_devices"] == [2]
    assert [e["device"] for e in rep["device_failure"]] == [0, 1, 3, 4, 5]
    assert [row["devices"] for row in rep["scaling"]] == [1, 2, 3, 4, 5]
    assert all(2 not in row["active"] for row in rep["scaling"])
    full = metrics.evaluate(model, test, devices="torch", failed=[], with_scaling=False)
    assert full["failed_devices"] == [] and len(full["device_failure"]) == 6
    per_device = full["bytes_per_sample"]["to_aggregator"] / 6  # one SCORES message per device and sample
    assert rep["bytes_per_sample"]["to_aggregator"] == pytest.approx(5 * per_device)
    # the CLI: --fail overrides the model's default, bad device numbers are one error line
    path = tmp_path / "m.pt"
    E.save(model, path)
    out = tmp_path / "e.json"
    args = ["-q", "ddnn", "eval", str(path), "--dataset", "digits-tiles", "--limit", "40", "--devices", "torch"]
    assert main([*args, "--no-scaling", "--fail", "0", "--fail", "3", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["failed_devices"] == [0, 3]
    capsys.readouterr()
    assert main([*args, "--fail", "6"]) == 2
    assert capsys.readouterr().err.strip() == "error: --fail 6: the model has devices 0..5"


def test_cli_train_without_device(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**TINY, "training": {"epochs": 1, "batch_size": 32}}))
    model = tmp_path / "m.pt"
    args = ["-q", "ddnn", "train", str(cfg), "--dataset", "digits-tiles", "--limit", "120", "-o", str(model)]
    assert main([*args, "--without-device", "4", "--without-device", "1"]) == 0
    assert E.load(model).config["training"]["absent_devices"] == [1, 4]


def test_shift_views_moves_the_whole_tiled_image():
    from ebnn_codegen.data.multiview import tile_images, untile_images

    img = torch.arange(30 * 28, dtype=torch.float32).view(1, 1, 30, 28).repeat(40, 1, 1, 1)
    views = torch.from_numpy(tile_images(img.numpy()))
    g = torch.Generator().manual_seed(0)
    out = tr.shift_views(views, 2, g, (3, 2))
    assert torch.equal(tr.shift_views(views, 0, g), views)
    back = torch.from_numpy(untile_images(out.numpy(), 30, 28))
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
    seen = set()
    for i in range(len(img)):
        match = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(padded[i, 0, 2 - dy : 32 - dy, 2 - dx : 30 - dx], back[i, 0])
        ]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) > 5 and out.shape == views.shape


# --------------------------------------------------------------------------- exit rule


def test_normalised_entropy_on_hand_made_vectors():
    eta = exits.normalized_entropy
    assert eta(np.zeros((1, 4)))[0] == pytest.approx(1.0)
    assert eta(np.array([[100.0, 0.0, 0.0]]))[0] == pytest.approx(0.0, abs=1e-12)
    assert eta(np.array([[0.0, 0.0, -1e9, -1e9]]))[0] == pytest.approx(0.5)  # log 2 / log 4
    p = np.array([0.7, 0.2, 0.1])
    want = -(p * np.log(p)).sum() / np.log(3)
    assert eta(np.log(p)[None])[0] == pytest.approx(want)
    assert eta(np.log(p)[None] + 1234.5)[0] == pytest.approx(want)  # shift invariant, no overflow
    z = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert exits.exits(z, 0.0).tolist() == [False, False]  # T = 0: never exit early
    assert exits.exits(z, 1.0).tolist() == [True, False]  # uniform: η = 1 is not < 1
    assert exits.exits(z, 1.0001).tolist() == [True, True]
    assert exits.argmax_first(np.array([[1, 3, 3]])).tolist() == [1]


# --------------------------------------------------------------------------- messages

LAYOUT = messages.MessageLayout(3, 8, 4, 6, ((5, 2, 3),) * 6 + ((8, 1, 1),))


def test_message_worked_example():
    q = messages.quantize_float(np.array([1.5, -0.25, 7.9]), 4)
    data = messages.encode_scores(LAYOUT, 2, 258, q)
    assert data.hex() == "420201" + "18fc7e"
    msg = messages.decode_message(data, LAYOUT)
    assert (msg.kind, msg.sender, msg.seq, msg.values.tolist()) == (messages.SCORES, 2, 258, [24, -4, 126])


@pytest.mark.parametrize("score_bits", [8, 16])
def test_message_round_trip(score_bits, rng):
    lay = messages.MessageLayout(10, score_bits, 3, 4, ((5, 2, 3),) * 4 + ((16, 2, 2),))
    qmax = lay.qmax
    q = rng.integers(-qmax, qmax + 1, size=(50, 10))
    rows = messages.encode_scores_batch(lay, 3, np.arange(65530, 65580), q)
    assert rows.shape == (50, lay.scores_bytes())
    for i, row in enumerate(rows):
        m = messages.decode_message(row.tobytes(), lay)
        assert m.seq == (65530 + i) & 0xFFFF and m.sender == 3 and m.values.tolist() == q[i].tolist()
    for sender, shape in ((1, (5, 2, 3)), (4, (16, 2, 2))):
        act = np.where(rng.random((7, *shape)) < 0.5, 1, -1).astype(np.int8)
        rows = messages.encode_features_batch(lay, sender, np.arange(7), act)
        assert rows.shape[1] == 3 + (np.prod(shape) + 7) // 8
        for i, row in enumerate(rows):
            m = messages.decode_message(row.tobytes(), lay)
            assert m.kind == messages.FEATURES and np.array_equal(m.values, act[i])


def test_feature_bits_are_the_core_layout_without_pixel_padding(rng):
    act = np.where(rng.random((16, 3, 5)) < 0.5, 1, -1).astype(np.int8)  # C = 16: no padding
    assert np.array_equal(messages.pack_features(act), bits.pack_activations(act))
    act = np.where(rng.random((5, 2, 3)) < 0.5, 1, -1).astype(np.int8)
    assert np.array_equal(messages.unpack_features(messages.pack_features(act), (5, 2, 3)), act)


def _reject(data: bytes, reason: str) -> None:
    with pytest.raises(messages.MessageError) as info:
        messages.decode_message(data, LAYOUT)
    assert info.value.reason == reason


def test_malformed_messages_are_rejected():
    good = messages.encode_scores(LAYOUT, 1, 7, np.array([1, 2, 3]))
    _reject(b"", "length")
    _reject(good[:2], "length")
    _reject(good[:-1], "length")
    _reject(good + b"\0", "length")
    _reject(bytes([0x00 | 1]) + good[1:], "type")  # type 0
    _reject(bytes([0xC0 | 1]) + good[1:], "type")  # type 3
    _reject(bytes([0x40 | 6]) + good[1:], "sender")  # 6 devices send scores: 0..5
    _reject(bytes([0x40 | 63]) + good[1:], "sender")
    _reject(good[:3] + bytes([0x80, 0, 0]), "value")  # -128 is reserved
    feat = messages.encode_features(LAYOUT, 0, 7, -np.ones((5, 2, 3), np.int8))
    assert len(feat) == 3 + 4  # 30 bits
    _reject(feat[:-1] + bytes([0x40]), "padding")  # bit 30 is unused
    _reject(bytes([0x80 | 7]) + feat[1:], "sender")  # sender 7 does not exist
    _reject(bytes([0x80 | 6]) + feat[1:], "length")  # sender 6 (an edge) sends 8 bits
    with pytest.raises(messages.MessageError):
        messages.decode_message("text", LAYOUT)  # type: ignore[arg-type]
    with pytest.raises(messages.MessageError):
        messages.encode_scores(LAYOUT, 1, 0, np.array([200, 0, 0]))


def test_decoder_never_crashes_on_random_bytes():
    rng = np.random.default_rng(5)
    ok = 0
    for _ in range(3000):
        n = int(rng.integers(0, 12))
        data = bytes(rng.integers(0, 256, n, dtype=np.uint8))
        if n and rng.random() < 0.5:
            data = bytes([(int(rng.integers(1, 3)) << 6) | int(rng.integers(0, 8))]) + data[1:]
        try:
            messages.decode_message(data, LAYOUT)
            ok += 1
        except messages.MessageError as exc:
            assert exc.reason in messages.REASONS
    assert ok > 0


def test_quantizers_agree():
    s = np.array([[-3.3, -0.03125, 0.03125, 0.5, 200.0, -200.0]])
    for scale in (12, 20, 3):
        fixed = np.round(s * 2.0**scale).astype(np.int64)
        assert np.array_equal(messages.quantize_fixed(fixed, scale, 3), messages.quantize_float(fixed / 2.0**scale, 3))


# --------------------------------------------------------------------------- staged runtime


def test_devices_c_equals_torch(tiny):
    model, test = tiny
    st_c = StagedRuntime(model, devices="c").device_stage(test)
    st_t = StagedRuntime(model, devices="torch").device_stage(test)
    assert np.array_equal(st_c.pred, st_t.pred)  # every device exit's prediction, bit-exact
    assert np.array_equal(st_c.feats, st_t.feats)  # every feature map bit
    assert np.abs(st_c.q - st_t.q).max() <= 1  # message integers: fixed point vs float rounding
    rt = StagedRuntime(model, devices="c")
    for t in (0.0, 0.5, 0.9):
        a, b = rt.run(st_c, {"local": t}), rt.run(st_t, {"local": t})
        assert np.mean(a.pred == b.pred) >= 0.98
        assert a.bytes_per_sample()["to_aggregator"] == b.bytes_per_sample()["to_aggregator"]


def test_grid_aggregator_lays_out_a_mosaic():
    from ebnn_codegen.ddnn.model import pool_masked

    x = torch.arange(6.0).view(1, 6, 1, 1, 1).expand(1, 6, 2, 2, 3)
    present = torch.tensor([[True, True, True, False, True, True]])
    y = pool_masked(x, present, "grid", (3, 2))
    assert y.shape == (1, 2, 6, 6)
    assert y[0, 0, ::2, ::3].tolist() == [[0, 1], [2, 0], [4, 5]]  # device 3 missing: zeros in its cell
    cfg = {**copy.deepcopy(TINY), "name": "tiny_grid"}
    cfg["cloud"] = {
        "aggregator": "grid",
        "grid": [3, 2],
        "layers": [{"type": "bconv", "out_channels": 4, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 10}],
    }
    model = DDNN(cfg)
    assert model.spec.cloud.in_shape == (5, 9, 8)
    assert model(torch.zeros(2, 6, 1, 3, 4))["cloud"].shape == (2, 10)


def test_shared_weights_compile_one_section():
    cfg = {**copy.deepcopy(TINY), "name": "tiny_shared", "share_weights": True, "local": {"aggregator": "avg"}}
    model, test = _trained(cfg, n=200)
    assert len(model.device_sections) == 1 and model.device(5) is model.device(0)
    rt_c = StagedRuntime(model, devices="c")
    st_c = rt_c.device_stage(test)
    assert list(rt_c._graphs) == [0]
    st_t = StagedRuntime(model, devices="torch").device_stage(test)
    assert np.array_equal(st_c.pred, st_t.pred) and np.array_equal(st_c.feats, st_t.feats)
    out = rt_c.run(st_c, {"local": 0.5})
    assert out.n == len(test)


def test_runtime_bytes_and_exits(tiny):
    model, test = tiny
    rt = StagedRuntime(model, devices="torch")
    st = rt.device_stage(test)
    lay = message_layout(model)
    none = rt.run(st, {"local": 0.0})
    assert none.exit_fraction == {"local": 0.0, "cloud": 1.0}
    b = none.bytes_per_sample()
    assert b["to_aggregator"] == 6 * lay.scores_bytes() and b["to_cloud"] == 6 * lay.features_bytes(0)
    assert b["raw"] == 6 * 12
    allx = rt.run(st, {"local": 1.01})
    assert allx.exit_fraction["local"] == 1.0 and allx.bytes_per_sample()["to_cloud"] == 0
    assert np.array_equal(allx.pred, none.tier_pred["local"])
    mid = rt.run(st, {"local": 0.7})
    frac = mid.exit_fraction["local"]
    assert mid.bytes_per_sample()["to_cloud"] == pytest.approx((1 - frac) * 6 * lay.features_bytes(0))
    sel = mid.exit_index == 0
    z, _ = rt.gateway.scores(st.q, np.ones((len(st), 6), bool))
    assert np.array_equal(sel, exits.normalized_entropy(z) < 0.7)


def test_failed_device_equals_corrupted_messages(tiny):
    model, test = tiny
    rt = StagedRuntime(model, devices="torch")
    st = rt.device_stage(test)
    failed = rt.run(st, failed=[2])

    def truncate_device_2(data: bytes) -> bytes:
        return data[:-1] if data[0] & 0x3F == 2 else data

    bad = rt.run(st, channel=truncate_device_2)
    assert np.array_equal(bad.pred, failed.pred)
    assert bad.message_errors == {"length": len(test) + int(np.sum(bad.exit_index == 1))}
    assert failed.message_errors == {}

    def flip_seq(data: bytes) -> bytes:
        return data[:1] + bytes([data[1] ^ 1]) + data[2:] if data[0] & 0x3F == 4 else data

    assert rt.run(st, channel=flip_seq).message_errors["sequence"] >= len(test)
    dropped = rt.run(st, channel=lambda d: None)  # nothing arrives: the cloud classifies from zeros
    assert dropped.exit_fraction["cloud"] == 1.0 and dropped.bytes_per_sample()["total"] == 0


def test_edge_tier_runs_staged(edge):
    model, test = edge
    st_c = StagedRuntime(model, devices="c").device_stage(test)
    rt = StagedRuntime(model, devices="torch")
    st_t = rt.device_stage(test)
    assert np.array_equal(st_c.pred, st_t.pred) and np.array_equal(st_c.feats, st_t.feats)
    out = rt.run(st_t, {"local": 0.0, "edge": 0.0})
    assert out.exit_fraction["cloud"] == 1.0
    assert out.bytes_per_sample()["edge_to_cloud"] == 2 * message_layout(model).features_bytes(6)
    # every tier agrees with the torch model's forward on the same (quantised) inputs
    with torch.no_grad():
        ref = model(torch.from_numpy(test.x).float())
    assert np.mean(out.tier_pred["cloud"] == ref["cloud"].argmax(1).numpy()) == 1.0
    assert np.mean(out.tier_pred["edge"] == ref["edge"].argmax(1).numpy()) == 1.0
    mid = rt.run(st_t, {"local": 0.6, "edge": 0.8})
    assert abs(sum(mid.exit_fraction.values()) - 1.0) < 1e-12


def test_evaluate_report_keys(tiny):
    model, test = tiny
    rep = metrics.evaluate(model, test, devices="c")
    for key in EVAL_CONTRACT_KEYS:
        assert key in rep
    assert set(rep["exit_accuracy"]) == {"local", "cloud"}
    assert len(rep["device_accuracy"]) == 6
    assert {"to_aggregator", "to_cloud", "raw"} <= set(rep["bytes_per_sample"])
    assert [e["device"] for e in rep["device_failure"]] == list(range(6))
    assert [r["devices"] for r in rep["scaling"]] == list(range(1, 7))
    assert rep["scaling"][-1]["overall_accuracy"] == rep["overall_accuracy"]


# --------------------------------------------------------------------------- gateway C


def test_gateway_c_matches_python(tiny, rng):
    from ebnn_codegen.ddnn.export import build_gateway, compile_devices

    model, test = tiny
    graphs = compile_devices(model)
    ffi, lib = build_gateway(model, graphs)
    name = model.name
    lay = message_layout(model)
    rt = StagedRuntime(model, devices="c")
    st = rt.device_stage(test)
    # device side: scores and feature messages byte for byte
    out = ffi.new("uint8_t[]", 256)
    for d in range(6):
        g = graphs[d]
        for i in range(0, len(test), 17):
            sc = ffi.new("int32_t[]", [int(v) for v in st.scores[i, d]])
            n = getattr(lib, f"{name}_encode_scores")(d, sc, i, out)
            assert bytes(ffi.buffer(out, n)) == messages.encode_scores(lay, d, i, st.q[i, d])
            packed = bits.pack_activations(st.feats[i, d])
            n = getattr(lib, f"{name}_encode_features")(d, ffi.from_buffer("uint8_t[]", packed), i, out)
            assert bytes(ffi.buffer(out, n)) == messages.encode_features(lay, d, i, st.feats[i, d])
        assert g.score_scale_log2 is not None
    # gateway: decode accepts and rejects exactly what Python does
    good = messages.encode_scores(lay, 3, 9, st.q[0, 3])
    cases = [good, good[:-1], b"\x00" + good[1:], bytes([0x40 | 6]) + good[1:], good[:3] + b"\x80" + good[4:]]
    dev, seq, q = ffi.new("int *"), ffi.new("uint16_t *"), ffi.new("int8_t[]", 10)
    for data in cases:
        rc = getattr(lib, f"{name}_decode_scores")(data, len(data), dev, seq, q)
        try:
            messages.decode_message(data, lay)
            assert rc == 0 and list(q) == st.q[0, 3].tolist()
        except messages.MessageError as exc:
            assert rc == -1 - messages.REASONS.index(exc.reason)
    # local exit: same prediction, same entropy up to float32
    present = rng.random((len(test), 6)) < 0.8
    z, pred = rt.gateway.scores(st.q, present)
    eta = exits.normalized_entropy(z)
    res = ffi.new("local_result_t *")
    for i in range(len(test)):
        qq = ffi.new("int8_t[]", [int(v) for v in st.q[i].reshape(-1)])
        pp = ffi.new("uint8_t[]", [int(v) for v in present[i]])
        p = getattr(lib, f"{name}_local_exit")(qq, pp, 0.5, res)
        assert p == res.pred == pred[i]
        assert res.eta == pytest.approx(eta[i], abs=1e-5)
        if abs(eta[i] - 0.5) > 1e-4:
            assert bool(res.exit) == bool(eta[i] < 0.5 and present[i].any())


# --------------------------------------------------------------------------- data


def test_mvmc_npz_layout(tmp_path):
    rng = np.random.default_rng(0)
    n = 20
    y = rng.integers(0, 4, size=(n, 6))
    y[:, 0] = rng.integers(0, 3, size=n)  # every object is seen at least once
    x = rng.integers(0, 256, size=(n, 6, 3, 32, 32), dtype=np.uint8)
    x[y == 3] = 0
    path = tmp_path / "mvmc.npz"
    np.savez(path, X=x, y=y)
    tr_ = datasets.load(f"mvmc-npz:{path}", "train")
    te = datasets.load(f"mvmc-npz:{path}", "test")
    assert len(tr_) == 16 and len(te) == 4 and tr_.x.shape[1:] == (6, 3, 32, 32)
    assert np.array_equal(tr_.y, np.where(tr_.y_views == 3, -1, tr_.y_views).max(axis=1))
    cfg = {
        "name": "mvmc_npz",
        "devices": 6,
        "classes": 3,
        "device": {
            "input": [3, 32, 32],
            "layers": [
                {"type": "conv", "out_channels": 2, "kernel": 3, "padding": 1, "pool": {"kernel": 4, "stride": 4}},
                {"type": "exit", "classes": 3},
            ],
        },
        "cloud": {"layers": [{"type": "blinear", "out_features": 8}, {"type": "exit", "classes": 3}]},
        "training": {"epochs": 1, "batch_size": 8, "validation": 0.0},
    }
    model = DDNN(cfg)
    tr.train(model, tr_)
    tr.calibrate_messages(model, tr_)
    rep = metrics.evaluate(model, te, devices="c", with_scaling=False)
    assert rep["samples"] == 4 and rep["bytes_per_sample"]["raw"] == 6 * 3 * 32 * 32
    with pytest.raises(E.CodegenError, match="mvmc"):
        datasets.load(f"mvmc-npz:{tmp_path / 'missing.npz'}", "train")


# --------------------------------------------------------------------------- CLI


def test_cli_train_eval_sweep_export(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**TINY, "training": {"epochs": 1, "batch_size": 32}}))
    model = tmp_path / "m.pt"
    assert main(["-q", "ddnn", "train", str(cfg), "--dataset", "digits-tiles", "--limit", "300", "-o", str(model)]) == 0
    loaded = E.load(model)
    assert isinstance(loaded, DDNN) and loaded.config["messages"]["score_frac_bits"] is not None
    assert loaded.config["meta"]["training"]["dataset"] == "digits-tiles"
    out = tmp_path / "e.json"
    args = ["ddnn", "eval", str(model), "--dataset", "digits-tiles", "--limit", "60", "--json", str(out)]
    assert main([*args, "--threshold", "0.6", "--devices", "torch"]) == 0
    rep = json.loads(out.read_text())
    for key in EVAL_CONTRACT_KEYS:
        assert key in rep
    assert rep["thresholds"] == {"local": 0.6} and rep["devices"] == "torch"
    assert (
        main(
            [
                "-q",
                "ddnn",
                "sweep",
                str(model),
                "--dataset",
                "digits-tiles",
                "--limit",
                "40",
                "-o",
                str(tmp_path / "sw"),
            ]
        )
        == 0
    )
    pngs = sorted(p.name for p in (tmp_path / "sw").glob("*.png"))
    assert pngs == [f"ddnn_digits_tiles_{k}.png" for k in ("communication", "failure", "scaling", "threshold")]
    assert "| T |" in (tmp_path / "sw" / "ddnn_digits_tiles_sweep.md").read_text()
    assert main(["-q", "ddnn", "export", str(model), "-o", str(tmp_path / "c")]) == 0
    names = sorted(str(p.relative_to(tmp_path / "c")) for p in (tmp_path / "c").rglob("*.[ch]"))
    assert "gateway/tiny_ddnn_gateway.c" in names and "devices/tiny_ddnn_dev5.c" in names
    capsys.readouterr()
    assert main(["ddnn", "eval", str(model), "--dataset", "no-such-set"]) == 2
    assert "error: unknown dataset 'no-such-set'" in capsys.readouterr().err
    assert main(["ddnn", "eval", str(model), "--dataset", "mnist-tiles", "--limit", "2", "--threshold", "2"]) == 2
    assert main(["ddnn", "train", str(tmp_path / "none.json"), "--dataset", "digits-tiles", "-o", str(model)]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY, "devices": 7}))
    assert main(["ddnn", "train", str(bad), "--dataset", "digits-tiles", "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "device, text",
    [
        ("bogus", "--torch-device: unknown device 'bogus'"),
        ("meta", "--torch-device must be cpu or cuda[:N], got 'meta'"),
        *([] if torch.cuda.is_available() else [("cuda", "--torch-device: CUDA is not available in this PyTorch")]),
    ],
)
def test_cli_train_torch_device_errors(tmp_path, capsys, device, text):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**TINY, "training": {"epochs": 1, "batch_size": 32}}))
    model = tmp_path / "m.pt"
    args = ["ddnn", "train", str(cfg), "--dataset", "digits-tiles", "--limit", "50", "-o", str(model)]
    assert main([*args, "--torch-device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {text}"]
    assert not model.exists()


def test_training_device_argument_is_recorded_and_model_ends_on_cpu(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**TINY, "training": {"epochs": 1, "batch_size": 32}}))
    model = tmp_path / "m.pt"
    args = ["-q", "ddnn", "train", str(cfg), "--dataset", "digits-tiles", "--limit", "120", "-o", str(model)]
    assert main([*args, "--torch-device", "cpu"]) == 0
    loaded = E.load(model)
    assert loaded.config["meta"]["training"]["torch_device"] == "cpu"
    assert all(p.device.type == "cpu" for p in loaded.parameters())


# --------------------------------------------------------------------------- the training pipeline as an API


def test_train_from_config_calibrates_records_and_saves(tmp_path, one_thread):
    """``ddnn.train_from_config`` = what ``ddnn train`` does; the calibration is a value the model holds
    (not a dict written into), and it is what the checkpoint keeps."""
    from ebnn_codegen import ddnn

    steps: list[str] = []
    res = ddnn.train_from_config(
        {**TINY, "training": {"epochs": 1, "batch_size": 32}},
        "digits-tiles",
        ddnn.Overrides(seed=3, without_devices=(4,)),
        limit=200,
        command="test",
        log=steps.append,
    )
    model = res.model
    assert [s[:5] for s in steps if s[:2] in ("[1", "[2", "[3", "[4")] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]"]
    assert isinstance(model.calibration, ddnn.Calibration) and model.calibration.calibrated
    assert model.config["messages"]["score_frac_bits"] == model.calibration.score_frac_bits
    assert model.config["training"]["absent_devices"] == [4] and model.config["training"]["seed"] == 3
    record = model.meta["training"]
    assert record["command"] == "test" and record["dataset"] == "digits-tiles" and len(record["data_sha256"]) == 64
    assert record["samples"] == res.samples > 0
    before = model.calibration
    model.config["thresholds"] = {"local": 0.05, "edge": 0.05}  # a copy: changes nothing
    assert model.calibration == before and model.config["thresholds"] == before.threshold_map()
    model.calibration = model.calibration.with_thresholds({"local": 0.3, "edge": 0.3})
    E.save(model, tmp_path / "m.pt")
    loaded = E.load(tmp_path / "m.pt")
    assert loaded.calibration == model.calibration and loaded.meta == model.meta
    assert loaded.config["thresholds"] == {"local": 0.3, "edge": 0.3}
    with pytest.raises(E.CodegenError, match="no such file"):
        ddnn.train_from_config(tmp_path / "missing.json", "digits-tiles")
    uncalibrated = DDNN(TINY)
    with pytest.raises(E.CodegenError, match="not calibrated"):
        uncalibrated.calibration.frac_bits()
