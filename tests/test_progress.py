"""Progress bars on stderr (ebnn_codegen.progress), -q anywhere, and the CLI's output details:
tables, accuracy from labels, --threads, --kernels help, missing output folders."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import torch
from conftest import random_model

import ebnn_codegen as E
from ebnn_codegen import progress
from ebnn_codegen.cli import build_parser, main, tables
from ebnn_codegen.ddnn import datasets, metrics
from ebnn_codegen.ddnn import train as tr
from ebnn_codegen.ddnn.model import DDNN

CONFIG = {
    "name": "prog",
    "input": [1, 8, 8],
    "layers": [
        {"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1, "pool": {"kernel": 2, "stride": 2}},
        {"type": "exit", "classes": 10},
    ],
}
BAR = re.compile(r"\d+/\d+ \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?\w+/s\]")  # count, elapsed<left, rate


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("prog") / "prog.pt"
    E.save(random_model(CONFIG, 2), path)
    return path


@pytest.fixture(autouse=True)
def _reset():
    yield
    progress.configure(quiet=True)


def test_bars_are_off_for_the_api_and_follow_the_environment(monkeypatch, capsys):
    progress.configure(quiet=True)
    monkeypatch.setenv(progress.ENV, "1")
    assert not progress.active()  # the Python API stays silent unless a front end turns bars on
    progress.configure(quiet=False)
    assert progress.active()
    monkeypatch.setenv(progress.ENV, "0")
    assert not progress.active()
    monkeypatch.delenv(progress.ENV)
    assert progress.active() is False  # stderr is not a terminal under pytest
    monkeypatch.setenv(progress.ENV, "1")
    assert list(progress.iterate(range(3), desc="x", unit="step")) == [0, 1, 2]
    with progress.bar(total=4, desc="y", unit="sample") as bar:
        bar.update(4)
    err = capsys.readouterr().err
    assert "x: 100%" in err and "y: 100%" in err and BAR.search(err), err


@pytest.mark.parametrize("where", ["none", "before", "after"])
def test_verify_shows_progress_unless_quiet_anywhere(ckpt, monkeypatch, capsys, where):
    monkeypatch.setenv(progress.ENV, "1")
    args = ["verify", str(ckpt), "--samples", "300", "--reference"]
    args = {"none": args, "before": ["-q", *args], "after": [*args, "-q"]}[where]
    assert main(args) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("PASS: 300 samples on host")
    if where == "none":
        for what in ("run on host", "PyTorch", "IR reference"):
            assert what in cap.err, cap.err
        assert BAR.search(cap.err), cap.err
        assert "sample/s" in cap.err
    else:
        assert cap.err == ""


def test_quiet_is_accepted_after_every_subcommand():
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            opts = {o for a in sub._actions for o in a.option_strings}
            assert {"-q", "--quiet"} <= opts, name
    assert parser.parse_args(["ddnn", "eval", "m.pt", "--dataset", "d", "-q"]).quiet is True
    assert parser.parse_args(["-q", "ddnn", "eval", "m.pt", "--dataset", "d"]).quiet is True
    assert parser.parse_args(["ddnn", "eval", "m.pt", "--dataset", "d"]).quiet is False


def _walk(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _walk(sub)


def test_every_option_has_help_and_kernels_says_what_it_is():
    seen = 0
    for p in _walk(build_parser()):
        for a in p._actions:
            if "--kernels" in a.option_strings:
                seen += 1
                assert a.help and "fast" in a.help and "reference" in a.help, p.prog
    assert seen >= 6  # export, run, verify, report, bench, ddnn export


def test_verify_reports_accuracy_from_labels(ckpt, tmp_path, capsys):
    graph = E.compile(ckpt)
    x = E.api.random_inputs(graph.input_shape, 50, seed=3)
    pred = E.api.run(graph, x).pred
    y = pred.copy()
    y[:10] = (y[:10] + 1) % 10  # 40 of 50 right
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "v.json"
    assert (
        main(
            [
                "-q",
                "verify",
                str(ckpt),
                "--input",
                str(tmp_path / "x.npy"),
                "--labels",
                str(tmp_path / "y.npy"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert "accuracy (C, against the labels): 80.00 % (40 of 50)" in capsys.readouterr().out
    assert json.loads(out.read_text())["details"]["accuracy"] == 0.8
    np.save(tmp_path / "y_short.npy", y[:49])
    assert (
        main(["-q", "verify", str(ckpt), "--input", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y_short.npy")])
        == 2
    )
    assert capsys.readouterr().err.startswith("error: labels must be 50 integers")
    assert main(["-q", "verify", str(ckpt), "--labels", str(tmp_path / "y.npy")]) == 2
    # a dataset as the input brings its labels
    assert main(["-q", "verify", str(ckpt), "--input", "digits:test", "--no-reference"]) == 0
    from ebnn_codegen.data import mnist

    xd, yd = mnist.load("digits", "test")
    acc = float(np.mean(E.api.run(graph, xd).pred == yd))
    assert (
        f"accuracy (C, against the labels): {100 * acc:.2f} % ({int(round(acc * len(yd)))} of 360)"
        in capsys.readouterr().out
    )


def test_a_missing_output_folder_is_the_same_error_for_every_output_file(ckpt, tmp_path, capsys):
    """run --output, verify --json, ddnn eval --json: one error line before any work, nothing written."""
    x = E.api.random_inputs((1, 8, 8), 3)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "f").write_text("")
    for where, why in (("missing/sub", "the folder {} does not exist"), ("f", "{} is a file, not a folder")):
        capsys.readouterr()
        out = tmp_path / where / "r.npz"
        assert main(["-q", "run", str(ckpt), "--input", str(tmp_path / "x.npy"), "--output", str(out)]) == 2
        assert capsys.readouterr().err == f"error: {out}: {why.format(out.parent)}\n"
        out = tmp_path / where / "v.json"
        assert main(["-q", "verify", str(ckpt), "--samples", "3", "--json", str(out)]) == 2
        assert capsys.readouterr().err == f"error: {out}: {why.format(out.parent)}\n"
        ddnn = ["-q", "ddnn", "eval", str(ckpt), "--dataset", "digits-tiles", "--json", str(out)]
        assert main(ddnn) == 2
        assert capsys.readouterr().err == f"error: {out}: {why.format(out.parent)}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "x.npy"]
    assert main(["-q", "verify", str(ckpt), "--samples", "3", "--json", str(tmp_path / "v.json")]) == 0


def test_tables_align_and_keep_every_field():
    data = {
        "target": "avr",
        "cycles": 787237,
        "cycles_per_mac": 2.051,
        "sram_symbols": {"m_workspace": 294},
        "blocks": [
            {"index": 0, "type": "conv", "cycles": 288396},
            {"index": 1, "type": "bconv", "cycles": 10},
        ],
    }
    text = tables.render(data)
    assert "{" not in text and "[" not in text
    lines = text.splitlines()
    assert lines[0] == "target          avr" and lines[1] == "cycles          787,237"
    assert "  m_workspace  294" in lines
    head = [line for line in lines if "index" in line][0]
    rows = [line for line in lines if line.strip().startswith(("0", "1"))]
    assert head == "  index  type    cycles"
    assert rows == ["      0  conv   288,396", "      1  bconv       10"]


def test_bench_prints_a_table(ckpt, capsys):
    assert main(["-q", "bench", str(ckpt), "--samples", "8"]) == 0
    out = capsys.readouterr().out
    assert "{" not in out and re.search(r"^us_per_inference +[\d.,]+$", out, re.M), out


def test_threads_take_any_positive_count(tmp_path, capsys):
    before = torch.get_num_threads()
    missing = str(tmp_path / "missing.json")
    try:
        # the thread count is checked and set first: a later error shows it was accepted
        assert main(["-q", "ddnn", "train", missing, "--dataset", "digits-tiles", "--threads", "3", "-o", "m.pt"]) == 2
        assert torch.get_num_threads() == 3
        assert capsys.readouterr().err == f"error: {missing}: no such file\n"
        assert main(["-q", "ddnn", "train", missing, "--dataset", "digits-tiles", "--threads", "0", "-o", "m.pt"]) == 2
        assert capsys.readouterr().err == "error: --threads must be a positive count, got 0\n"
    finally:
        torch.set_num_threads(before)


def test_ddnn_eval_and_sweep_count_their_steps(tmp_path, monkeypatch, capsys):
    cfg = {
        "name": "t",
        "devices": 6,
        "classes": 10,
        "device": {
            "input": [1, 3, 4],
            "layers": [{"type": "conv", "out_channels": 2, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 10}],
        },
        "local": {"aggregator": "max"},
        "cloud": {"aggregator": "max", "layers": [{"type": "exit", "classes": 10}]},
        "training": {"epochs": 1, "batch_size": 32},
    }
    torch.manual_seed(0)
    model = DDNN(cfg)
    data = datasets.load("digits-tiles", "train", n=64)
    tr.train(model, data)
    tr.calibrate_messages(model, data)
    test = datasets.load("digits-tiles", "test", n=40)
    for failed, scaling in (([2], True), ([1, 3], False)):
        calls: list[int] = []
        metrics.evaluate(
            model, test, devices="torch", failed=failed, with_scaling=scaling, step=lambda c=calls: c.append(1)
        )
        assert len(calls) == metrics.evaluate_steps(model, failed, scaling)
    calls = []
    metrics.sweep(model, test, devices="torch", step=lambda: calls.append(1))
    assert len(calls) == metrics.evaluate_steps(model, None, True) + len(metrics.SWEEP_THRESHOLDS)
    # the CLI draws the bar (forced on), and not with -q
    path = tmp_path / "m.pt"
    E.save(model, path)
    monkeypatch.setenv(progress.ENV, "1")
    args = [
        "ddnn",
        "eval",
        str(path),
        "--dataset",
        "digits-tiles",
        "--limit",
        "30",
        "--devices",
        "torch",
        "--no-scaling",
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    total = metrics.evaluate_steps(model, None, False)
    assert "ddnn eval (30 samples): 100%" in err and f"{total}/{total} [" in err and "step/s" in err, err
    assert main([*args, "-q"]) == 0
    assert capsys.readouterr().err == ""
