"""Trained checkpoints record how they were made, and the training commands are deterministic:
the same command on one thread gives the same weights bit for bit."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import pytest
import torch
from conftest import strict_tools

import ebnn_codegen as E
from ebnn_codegen.checkpoint import data_hash, read_checkpoint
from ebnn_codegen.cli import main
from ebnn_codegen.packaging import package_files

ROOT = Path(__file__).resolve().parents[1]

SMALL_DDNN = {
    "name": "repro",
    "devices": 6,
    "classes": 10,
    "device": {
        "input": [1, 3, 4],
        "layers": [
            {"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1},
            {"type": "exit", "classes": 10},
        ],
    },
    "local": {"aggregator": "max"},
    "cloud": {
        "aggregator": "concat",
        "layers": [{"type": "bconv", "out_channels": 8, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 10}],
    },
    "training": {"epochs": 1, "batch_size": 32, "lr": 0.01, "device_dropout": 0.2, "recalibrate_bn": True},
}


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert differ == [], f"{len(differ)} of {len(sa)} tensors differ, e.g. {differ[:3]}"


def test_ddnn_train_twice_gives_the_same_weights_and_records_its_command(tmp_path):
    cfg = tmp_path / "repro.json"
    cfg.write_text(json.dumps(SMALL_DDNN))
    before = torch.get_num_threads()
    try:
        for out in ("a.pt", "b.pt"):
            args = ["-q", "ddnn", "train", str(cfg), "--dataset", "digits-tiles", "--limit", "150"]
            assert main([*args, "--threads", "1", "-o", str(tmp_path / out)]) == 0
    finally:
        torch.set_num_threads(before)
    _same_weights(tmp_path / "a.pt", tmp_path / "b.pt")
    a, b = (read_checkpoint(tmp_path / f)["config"] for f in ("a.pt", "b.pt"))
    assert a["thresholds"] == b["thresholds"] and a["messages"] == b["messages"]
    rec = a["meta"]["training"]
    assert rec["command"] == "ebnn-gen " + shlex.join([*args, "--threads", "1", "-o", str(tmp_path / "a.pt")])
    assert rec["package_version"] == E.__version__ and rec["torch_version"] == torch.__version__.split("+")[0]
    from ebnn_codegen.ddnn import datasets

    data = datasets.load("digits-tiles", "train", n=150)
    assert rec["data_sha256"] == data_hash(data.x, data.y, data.y_views)
    assert rec["dataset"] == "digits-tiles" and rec["threads"] == 1


def test_train_mnist_example_twice_gives_the_same_weights(tmp_path):
    """examples/train_mnist.py (ebnn_codegen.nn.train), run in-process: same command, same weights; the record
    names the command and the data, which the export's example sketch then uses."""
    cfg = tmp_path / "d.json"
    cfg.write_text(
        json.dumps(
            {
                "name": "digits_repro",
                "input": [1, 8, 8],
                "layers": [
                    {"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1},
                    {"type": "exit", "classes": 10},
                ],
            }
        )
    )
    spec = importlib.util.spec_from_file_location("train_mnist", ROOT / "examples/train_mnist.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    before = torch.get_num_threads()
    try:
        for out in ("a.pt", "b.pt"):
            argv = ["--config", str(cfg), "--dataset", "digits", "--epochs", "1", "--train-limit", "300"]
            argv += ["--threads", "1", "-o", str(tmp_path / out), "--export", str(tmp_path / f"c_{out}")]
            assert script.main(argv) == 0
    finally:
        torch.set_num_threads(before)
    _same_weights(tmp_path / "a.pt", tmp_path / "b.pt")
    rec = read_checkpoint(tmp_path / "a.pt")["config"]["meta"]["training"]
    assert rec["command"].startswith("python examples/train_mnist.py --config ")
    from ebnn_codegen.data import mnist

    x, y = mnist.load("digits", "train", n=300)
    assert rec["data_sha256"] == data_hash(x, y) and rec["dataset"] == "digits" and rec["samples"] == 300
    files = package_files(E.compile(tmp_path / "a.pt"), "arduino", task=rec)
    assert "scikit-learn digits test image #" in files["examples/digits_repro_classify/digits_repro_sample.h"]


def test_train_mnist_init_runs_the_later_stages_and_records_both_commands(tmp_path):
    """--init CHECKPOINT --epochs 0: the trained weights are the start, only the head, the deployed
    fine-tune (held-out images) run; the record keeps the first command under "init"; --finetune
    without --holdout is refused."""
    cfg = tmp_path / "d.json"
    cfg.write_text(
        json.dumps(
            {
                "name": "digits_init",
                "input": [1, 8, 8],
                "layers": [
                    {"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1},
                    {"type": "blinear", "out_features": 16},
                    {"type": "exit", "classes": 10},
                ],
            }
        )
    )
    spec = importlib.util.spec_from_file_location("train_mnist", ROOT / "examples/train_mnist.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    common = ["--dataset", "digits", "--train-limit", "600", "--threads", "1"]
    before = torch.get_num_threads()
    try:
        first = ["--config", str(cfg), "--epochs", "2", "-o", str(tmp_path / "a.pt"), "--export", str(tmp_path / "ca")]
        assert script.main(first + common) == 0
        later = ["--init", str(tmp_path / "a.pt"), "--epochs", "0", "--holdout", "100", "--head-epochs", "2"]
        later += ["--finetune", "1", "-o", str(tmp_path / "b.pt"), "--export", str(tmp_path / "cb")]
        assert script.main(later + common) == 0
        with pytest.raises(SystemExit):
            script.main(["--init", str(tmp_path / "a.pt"), "--finetune", "1"] + common)
    finally:
        torch.set_num_threads(before)
    a, b = (read_checkpoint(tmp_path / n)["state_dict"] for n in ("a.pt", "b.pt"))
    assert torch.equal(a["blocks.0.conv.weight"], b["blocks.0.conv.weight"])
    assert not torch.equal(a["blocks.1.linear.weight"], b["blocks.1.linear.weight"])
    rec = read_checkpoint(tmp_path / "b.pt")["config"]["meta"]["training"]
    assert "--init" in rec["command"] and rec["samples"] == 500
    assert rec["init"]["command"].startswith("python examples/train_mnist.py --config ")


DOCUMENTED = "ebnn-gen ddnn train examples/ddnn_mvmc_like.json --dataset mvmc-like -o examples/models/ddnn_mvmc_like.pt"


def test_shipped_ddnn_mvmc_like_records_its_documented_command():
    """The shipped checkpoint is the output of the command docs/ddnn.md gives beside it."""
    rec = read_checkpoint(ROOT / "examples/models/ddnn_mvmc_like.pt")["config"]["meta"]["training"]
    assert rec["command"] == DOCUMENTED
    assert DOCUMENTED in (ROOT / "docs/ddnn.md").read_text()
    assert rec["threads"] == 1 and rec["torch_device"] == "cpu" and rec["dataset"] == "mvmc-like"
    assert len(rec["data_sha256"]) == 64 and rec["package_version"] and rec["torch_version"]


@pytest.mark.slow
@pytest.mark.mnist
def test_shipped_ddnn_mvmc_like_was_trained_on_todays_data():
    """The mvmc-like generator still gives the data the shipped checkpoint was trained on."""
    from ebnn_codegen.ddnn import datasets

    rec = read_checkpoint(ROOT / "examples/models/ddnn_mvmc_like.pt")["config"]["meta"]["training"]
    try:
        data = datasets.load("mvmc-like", "train")
    except E.CodegenError as exc:  # the MNIST data cannot be fetched here
        if strict_tools():
            pytest.fail(f"MNIST is required on CI: {exc}")
        pytest.skip(str(exc))
    assert rec["data_sha256"] == data_hash(data.x, data.y, data.y_views)


def test_augments_move_each_image_on_its_own_and_keep_its_pixels():
    """random_crop shifts every image by its own offset (zero fill); random_crop_flip mirrors some."""
    import numpy as np
    import torch

    from ebnn_codegen.nn.train import AUGMENTS, random_crop, random_crop_flip

    x = torch.arange(1, 1 + 64 * 36, dtype=torch.float32).reshape(64, 1, 6, 6)
    out = random_crop(x, np.random.default_rng(3), max_shift=2)
    assert out.shape == x.shape
    offsets = set()
    for img, src in zip(out, x):
        kept = img[img > 0]
        # every pixel kept comes from its own image, and the kept window is a contiguous shift
        assert set(kept.tolist()) <= set(src.flatten().tolist())
        first = int(kept.min())
        offsets.add(first)
        assert kept.numel() >= 16  # at most 2 rows and 2 columns lost
    assert len(offsets) > 3  # the images did not all move together
    same = random_crop(x, np.random.default_rng(3), max_shift=2)
    assert torch.equal(out, same)  # seeded: the same crops again
    flipped = random_crop_flip(x, np.random.default_rng(5), max_shift=0)
    mirrored = [bool(torch.equal(f, s.flip(2))) for f, s in zip(flipped, x)]
    unchanged = [bool(torch.equal(f, s)) for f, s in zip(flipped, x)]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 10 < sum(mirrored) < 54
    assert set(AUGMENTS) == {"shift", "crop", "crop-flip"}


def test_batch_norm_reestimation_averages_the_statistics_over_the_data():
    """reestimate_batch_norm replaces stale running statistics by the mean and variance of the
    pre-batch-norm values over the given images (here one batch: exact), and keeps the momentum."""
    import numpy as np
    import torch

    import ebnn_codegen as E
    from ebnn_codegen.nn.train import reestimate_batch_norm

    cfg = {
        "name": "bn_pass",
        "input": [1, 8, 8],
        "layers": [
            {"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1},
            {"type": "blinear", "out_features": 6},
            {"type": "exit", "classes": 3},
        ],
    }
    torch.manual_seed(0)
    model = E.build(cfg)
    first = model.blocks[0]
    first.bn.running_mean.fill_(123.0)
    first.bn.running_var.fill_(1e-3)
    x = np.random.default_rng(1).integers(0, 256, (50, 1, 8, 8), dtype=np.uint8)
    reestimate_batch_norm(model, x, batch=50)
    assert not model.training and first.bn.momentum == 0.1
    with torch.no_grad():
        acc = first.accumulator(torch.from_numpy(x).float())
    torch.testing.assert_close(first.bn.running_mean, acc.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(first.bn.running_var, acc.var(dim=(0, 2, 3), unbiased=True))


def test_distillation_uses_the_teacher_and_checks_its_weight():
    """train() with a teacher: the same seed gives other weights than without one (the soft
    targets enter the loss); a teacher with distill outside (0, 1] is refused."""
    import numpy as np
    import pytest
    import torch

    import ebnn_codegen as E
    from ebnn_codegen.nn.train import float_teacher, train

    cfg = {
        "name": "kd",
        "input": [1, 8, 8],
        "layers": [{"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 3}],
    }
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 1, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 64)
    teacher = float_teacher((1, 8, 8), 3, width=4)
    assert teacher(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    weights = []
    for kw in ({}, {"teacher": teacher, "distill": 0.7}):
        torch.manual_seed(0)
        model = E.build(cfg)
        train(model, x, y, epochs=1, batch_size=16, log=None, **kw)
        weights.append(model.blocks[0].conv.weight.detach().clone())
    assert not torch.equal(weights[0], weights[1])
    with pytest.raises(ValueError, match="distill"):
        train(E.build(cfg), x, y, epochs=1, log=None, teacher=teacher, distill=0.0)


def _conv_linear_exit(name: str) -> dict:
    """A tiny device section with a head: conv 4 on 8x8, blinear 8, exit 3."""
    return {
        "name": name,
        "input": [1, 8, 8],
        "layers": [
            {"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1},
            {"type": "blinear", "out_features": 8},
            {"type": "exit", "classes": 3},
        ],
    }


def test_finetune_deployed_keeps_statistics_and_first_block_and_returns_the_best_state():
    """finetune_deployed trains as deployed: the batch norms' running statistics are not touched
    (eval mode), the first block's weights stay fixed, other weights move, and the state it
    returns is the best of its validation checks (the starting one included)."""
    import numpy as np
    import torch

    import ebnn_codegen as E
    from ebnn_codegen.nn.train import accuracy, finetune_deployed, train

    cfg = _conv_linear_exit("ft")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (192, 1, 8, 8), dtype=np.uint8)
    y = (x[:, 0, :4].reshape(192, -1).mean(1) > x[:, 0, 4:].reshape(192, -1).mean(1)).astype(np.int64)
    y[::3] = 2
    torch.manual_seed(0)
    model = E.build(cfg)
    train(model, x[:128], y[:128], epochs=1, batch_size=32, log=None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist = finetune_deployed(
        model, x[:128], y[:128], x_val=x[128:], y_val=y[128:], epochs=3, batch_size=16, lr=0.05, check_every=2, log=None
    )
    after = model.state_dict()
    for name, value in before.items():
        if "running_" in name or "num_batches" in name or name.startswith("blocks.0.conv."):
            assert torch.equal(value, after[name]), name
    assert len(hist.val_acc) == 1 + 3 * 8 // 2
    assert accuracy(model, x[128:], y[128:]) == max(hist.val_acc)
    if max(hist.val_acc[1:]) > hist.val_acc[0]:  # a later state won: the weights it keeps moved
        assert not torch.equal(before["blocks.1.linear.weight"], after["blocks.1.linear.weight"])
    else:
        assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert not model.training


def test_train_head_trains_only_the_linear_head_and_reestimates_its_statistics():
    """train_head: the conv blocks (weights and statistics) are untouched, the linear head's
    weights move, and the head's batch norm ends with the statistics of the final weights over
    the training images (its re-estimation), the model in eval mode.  With validation images it
    returns the best of the starting state and every epoch's settled state on them."""
    import numpy as np
    import torch

    import ebnn_codegen as E
    from ebnn_codegen.nn.train import accuracy, train, train_head

    cfg = _conv_linear_exit("head")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (128, 1, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 128)
    torch.manual_seed(0)
    model = E.build(cfg)
    train(model, x, y, epochs=1, batch_size=32, log=None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist = train_head(model, x, y, epochs=2, batch_size=16, lr=0.05, log=None)
    after = model.state_dict()
    for name, value in before.items():
        if name.startswith("blocks.0."):
            assert torch.equal(value, after[name]), name
    assert not torch.equal(before["blocks.1.linear.weight"], after["blocks.1.linear.weight"])
    assert not torch.equal(before["exit.linear.weight"], after["exit.linear.weight"])
    assert not model.training and hist.val_acc == [] and len(hist.train_loss) == 2
    with torch.no_grad():
        feats = model.blocks[0](torch.from_numpy(x).float())
        acc = model.blocks[1].accumulator(feats)
    torch.testing.assert_close(model.blocks[1].bn.running_mean, acc.mean(0))

    start = accuracy(model, x[:48], y[:48])
    hist = train_head(model, x, y, epochs=4, batch_size=16, lr=0.05, log=None, x_val=x[:48], y_val=y[:48])
    assert len(hist.val_acc) == 4
    assert accuracy(model, x[:48], y[:48]) == max([start, *hist.val_acc])
