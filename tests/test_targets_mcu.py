"""The generated C on emulated microcontrollers: avr (simavr), cortex-m0/m3/m4 and rv32imc (qemu).

Parity: for a small shipped-like model, the shipped checkpoints (examples/models/*.pt) and
seeded random architectures, on every target and with both kernel strategies, every hidden
block has the same bits as torch and the scores equal the host build's. Then sizes, the
benchmark, check_fits and the timeout path. Each model + target + kernels is compiled once
(builds are cached) and run on a few samples only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen import api, targets
from ebnn_codegen.checkpoint import read_checkpoint
from ebnn_codegen.cli import main as cli_main
from ebnn_codegen.errors import FitError, ResourceError, ToolError
from ebnn_codegen.targets import elfsize, mcu

pytestmark = pytest.mark.emulator

TARGETS = ["avr", "cortex-m0", "cortex-m3", "cortex-m4", "rv32imc", "xtensa-lx106"]
KERNELS = ["fast", "reference"]
ROOT = Path(__file__).resolve().parent.parent


def need(target: str) -> mcu.McuTarget:
    t = targets.get(target)
    require_tools(*t.tools, package=t.packages)
    if target == "avr":  # the simavr runner is built against libsimavr
        require_tools("/usr/include/simavr/sim_avr.h", package="libsimavr-dev")
    return t


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------

SHIPLIKE = {
    "name": "shiplike",
    "input": [1, 16, 16],
    "layers": [
        {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1, "pool": {"kernel": 2, "stride": 2}},
        {"type": "bconv", "out_channels": 16, "kernel": 3, "padding": 1, "pool": {"kernel": 2, "stride": 2}},
        {"type": "blinear", "out_features": 32},
        {"type": "exit", "classes": 10},
    ],
}

# Edge cases picked by hand: one channel everywhere; 40 channels; a binary window over 31 bytes;
# conv straight into the exit.
EDGE = [
    {
        "name": "one_channel",
        "input": [1, 7, 5],
        "layers": [
            {"type": "conv", "out_channels": 1, "kernel": [3, 1], "padding": [1, 0]},
            {"type": "bconv", "out_channels": 1, "kernel": [1, 3], "stride": [1, 2], "padding": [0, 1]},
            {"type": "exit", "classes": 2},
        ],
    },
    {
        "name": "wide40",
        "input": [2, 5, 6],
        "layers": [
            {
                "type": "conv",
                "out_channels": 40,
                "kernel": 2,
                "pool": {"kernel": [3, 2], "stride": [2, 1], "padding": [1, 1]},
            },
            {"type": "bconv", "out_channels": 9, "kernel": [2, 3], "padding": [0, 1]},
            {"type": "blinear", "out_features": 40},
            {"type": "exit", "classes": 3},
        ],
    },
    {  # a binary window of 45 bytes (over the generated kernels' 31): the runtime's gathered words
        "name": "wide_window",
        "input": [2, 6, 7],
        "layers": [
            {"type": "conv", "out_channels": 33, "kernel": 2, "padding": 1},
            {
                "type": "bconv",
                "out_channels": 12,
                "kernel": 3,
                "stride": [1, 2],
                "padding": 1,
                "pool": {"kernel": 3, "stride": 2, "padding": 1},
            },
            {"type": "exit", "classes": 4},
        ],
    },
    {
        "name": "conv_exit",
        "input": [3, 9, 4],
        "layers": [
            {"type": "conv", "out_channels": 17, "kernel": [3, 2], "stride": 2, "padding": 1},
            {"type": "exit", "classes": 5},
        ],
    },
]


def random_config(seed: int, max_macs: int = 40_000) -> dict:
    """A random valid architecture: odd and non-square sizes, 1 to 40 channels, stride, pool padding."""
    rng = np.random.default_rng(1000 + seed)
    while True:
        c, h, w = int(rng.integers(1, 4)), int(rng.integers(5, 14)), int(rng.integers(5, 14))
        layers: list[dict] = []
        shape = (c, h, w)
        macs = 0
        n_conv = int(rng.integers(1, 3))
        ok = True
        for i in range(n_conv):
            kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
            f = int(rng.integers(1, 41))
            oh, ow = (shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1
            if oh < 1 or ow < 1:
                ok = False
                break
            layer = {
                "type": "conv" if i == 0 else "bconv",
                "out_channels": f,
                "kernel": [kh, kw],
                "stride": [sh, sw],
                "padding": [ph, pw],
            }
            macs += f * oh * ow * shape[0] * kh * kw
            if rng.random() < 0.6 and oh >= 2 and ow >= 2:
                pk = [int(rng.integers(2, 4)), int(rng.integers(2, 4))]
                ps = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
                pp = [int(rng.integers(0, pk[0] // 2 + 1)), int(rng.integers(0, pk[1] // 2 + 1))]
                oh, ow = (oh + 2 * pp[0] - pk[0]) // ps[0] + 1, (ow + 2 * pp[1] - pk[1]) // ps[1] + 1
                if oh < 1 or ow < 1:
                    ok = False
                    break
                layer["pool"] = {"kernel": pk, "stride": ps, "padding": pp}
            layers.append(layer)
            shape = (f, oh, ow)
        if not ok:
            continue
        if rng.random() < 0.7:
            f = int(rng.integers(1, 41))
            macs += f * int(np.prod(shape))
            layers.append({"type": "blinear", "out_features": f})
            shape = (f, 1, 1)
        k = int(rng.integers(2, 11))
        macs += k * int(np.prod(shape))
        layers.append({"type": "exit", "classes": k})
        if macs <= max_macs:
            return {"name": f"rand{seed}", "input": [c, h, w], "layers": layers}


MODELS = {
    "shiplike": SHIPLIKE,
    **{cfg["name"]: cfg for cfg in EDGE},
    **{f"rand{s}": random_config(s) for s in range(3)},
}
SHIPPED = [
    p for p in sorted((ROOT / "examples" / "models").glob("*.pt")) if read_checkpoint(p)["kind"] == "device"
]  # DDNN checkpoints are exported per section by `ebnn-gen ddnn`

AVR_TOO_BIG = {"fashion_m4"}  # its weights alone are more than the ATmega644P's 64 KB of flash

_COMPILED: dict[str, tuple] = {}


def model_and_graph(key: str):
    if key not in _COMPILED:
        if key in MODELS:
            model = random_model(MODELS[key], seed=len(key))
        else:
            model = E.load(key)
        _COMPILED[key] = (model, E.compile(model))
    return _COMPILED[key]


def inputs(graph, n: int = 3) -> np.ndarray:
    return api.random_inputs(graph.input_shape, n, seed=7)  # all-0, all-255, then random


_HOST: dict[tuple[str, str], object] = {}


def host_result(key: str, kernels: str):
    if (key, kernels) not in _HOST:
        _, graph = model_and_graph(key)
        _HOST[key, kernels] = api.run(graph, inputs(graph), kernels=kernels)
    return _HOST[key, kernels]


def test_random_configs_cover_the_edge_cases():
    cfgs = [MODELS[k] for k in MODELS]
    layers = [layer for cfg in cfgs for layer in cfg["layers"]]
    widths = [layer.get("out_channels", layer.get("out_features")) for layer in layers if layer["type"] != "exit"]
    assert min(widths) == 1 and max(widths) == 40
    assert any(layer.get("pool", {}).get("padding", [0, 0]) != [0, 0] for layer in layers)
    assert any(layer.get("stride", 1) not in (1, [1, 1]) for layer in layers)
    assert any(cfg["input"][1] != cfg["input"][2] for cfg in cfgs)
    assert any(cfg["input"][1] % 2 for cfg in cfgs)


# ---------------------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------------------


def check_parity(key: str, target: str, kernels: str, n: int = 3) -> None:
    t = need(target)
    model, graph = model_and_graph(key)
    x = inputs(graph, n)
    result = t.run(graph, x, kernels=kernels)
    host = host_result(key, kernels) if n == 3 else api.run(graph, x, kernels=kernels)
    np.testing.assert_array_equal(result.scores, host.scores)
    np.testing.assert_array_equal(result.pred, host.pred)
    for a, b in zip(result.layers, host.layers, strict=True):
        np.testing.assert_array_equal(a, b)
    rep = api.compare(graph, model, x, result, target, kernels)
    assert rep.bit_mismatches == 0, rep.summary()
    assert rep.reference_exact, rep.summary()
    assert rep.bits_compared == sum(b.out_channels * b.out_shape[1] * b.out_shape[2] for b in graph.hidden) * n


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("key", list(MODELS))
def test_parity_with_torch_and_host(key, target, kernels):
    check_parity(key, target, kernels)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_parity_shipped_models(path, target, kernels):
    """Every shipped model on every target; on AVR, a model whose verification harness needs
    more than the ATmega328P's SRAM runs on the ATmega644P (same avr5 core, 4 KB SRAM). A model
    made for the 32-bit targets (``AVR_TOO_BIG``) is refused by the AVR fit check instead."""
    if target == "avr" and path.stem in AVR_TOO_BIG:
        t = need(target)
        _, graph = model_and_graph(str(path))
        with pytest.raises(FitError, match="does not fit avr"):
            t.check_fits(graph, kernels, measure=False)
        return
    check_parity(str(path), target, kernels, n=2)


def test_many_samples_are_split_across_avr_elfs():
    """More inputs than the Uno's flash holds at once: several ELFs, one record stream."""
    t = need("avr")
    cfg = {
        "name": "big_input",
        "input": [3, 20, 20],  # 1200-byte inputs: about 25 per ELF
        "layers": [{"type": "conv", "out_channels": 3, "kernel": 3, "stride": 3}, {"type": "exit", "classes": 3}],
    }
    graph = E.compile(random_model(cfg, 4))
    x = api.random_inputs(graph.input_shape, 40, seed=3)
    result = t.run(graph, x)
    assert result.stats["samples_per_elf"] < 40
    host = api.run(graph, x)
    np.testing.assert_array_equal(result.scores, host.scores)
    for a, b in zip(result.layers, host.layers, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------
# sizes, benchmark, fits
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_size_and_bench(target):
    t = need(target)
    _, graph = model_and_graph("shiplike")
    rep = api.report(graph)["totals"]
    b = t.bench(graph, "fast")
    metric = "cycles" if target == "avr" else "instructions"
    for key in (
        "target",
        metric,
        "binary_macs",
        "ms_at_clock",
        "clock_hz",
        "flash_bytes",
        "sram_bytes",
        "peak_stack_bytes",
        f"{metric[:-1]}s_per_mac",
    ):
        assert key in b, key
    json.dumps(b)
    assert b["target"] == target and b["binary_macs"] == rep["binary_macs"]
    assert b[metric] > rep["binary_macs"] // 32  # at least one instruction per 32 binary MACs (one word)
    assert b["ms_at_clock"] == pytest.approx(1000 * b[metric] / b["clock_hz"], rel=1e-3)
    # the model's constants are all there; code is counted besides them
    assert b["flash_bytes"] >= rep["flash_bytes"]
    assert b["sram_bytes"] == rep["static_ram_bytes"]  # the workspace, nothing else
    assert 16 <= b["peak_stack_bytes"] <= 1024  # generated kernels keep their window in a frame of ~0.5 KB
    # per block: truncated runs; they add up to about one inference
    blocks = b["blocks"]
    assert [blk["index"] for blk in blocks] == list(range(len(graph.blocks)))
    assert all(blk[metric] > 0 for blk in blocks)
    assert sum(blk[metric] for blk in blocks) == pytest.approx(b[metric], rel=0.05)


def test_avr_model_constants_stay_in_flash():
    t = need("avr")
    _, graph = model_and_graph("shiplike")
    s = t.size(graph, "fast")
    # the only model symbol in RAM is the static workspace of shiplike_infer
    assert s["sram_symbols"] == {"shiplike_workspace": graph.buffers["workspace_bytes"]}
    _, objs = t.model_objects(graph, "fast")
    for obj in objs:
        for name, kind, size in elfsize.nm_sizes_of(t.toolchain, obj):
            if kind.lower() == "d":
                pytest.fail(f"{obj.name}: {name} ({size} B) is initialised data, copied to SRAM at start-up")
    elf = t.build(graph, "fast", mcu.MODE_SIZE, mcu.sample_input(graph))
    flash_syms = {name: kind for name, kind, _ in elfsize.nm_sizes_of(t.toolchain, elf)}
    # the AVR kernels read these (the first block's weights and thresholds are immediates in its
    # code, and no kernel reads the block descriptors there, so the linker drops them)
    for name in ("shiplike_rows0", "shiplike_bound1", "shiplike_w2", "shiplike_lb2", "shiplike_mul3"):
        assert flash_syms[name].lower() == "t", name  # in .text (PROGMEM), not in .data/.bss
    model_syms = [n for n in flash_syms if n.startswith("shiplike_") and n != "shiplike_workspace"]
    assert all(flash_syms[n].lower() == "t" for n in model_syms), model_syms
    assert flash_syms["ebnn_popcount8"] == "R"  # weak (shared runtime): read-only, in flash
    assert s["code_bytes"] > 0 and s["constant_bytes"] >= api.report(graph)["totals"]["flash_bytes"]


def big_model():
    cfg = {
        "name": "too_big",
        "input": [1, 32, 32],
        "layers": [
            {"type": "conv", "out_channels": 16, "kernel": 3, "padding": 1},
            {"type": "blinear", "out_features": 64},
            {"type": "exit", "classes": 10},
        ],
    }
    return random_model(cfg, 1)


def test_check_fits_refuses_a_model_too_big_for_the_uno(tmp_path):
    graph = E.compile(big_model())
    avr = targets.get("avr")
    with pytest.raises(ResourceError) as info:
        avr.check_fits(graph, "fast")
    msg = str(info.value)
    weights = api.report(graph)["totals"]["flash_bytes"]
    assert "too_big" in msg and "ATmega328P" in msg
    assert f"needs {weights:,} B flash, ATmega328P has 32,256 B after its bootloader (30,208 B for the model)" in msg
    assert "; largest: block 1 weights 131,072 B" in msg
    # the same model fits the bigger chips (prediction only: no toolchain needed)
    assert targets.get("cortex-m4").check_fits(graph, "fast", measure=False).flash_bytes == weights
    # the CLI refuses before writing anything
    ckpt = tmp_path / "big.pt"
    E.save(big_model(), ckpt)
    out = tmp_path / "out"
    assert cli_main(["-q", "export", str(ckpt), "--target", "avr", "-o", str(out)]) == 2
    assert not out.exists()


def test_check_fits_measures_when_the_tools_are_there():
    t = need("avr")
    _, graph = model_and_graph("shiplike")
    checked = t.check_fits(graph, "fast")
    assert checked.measured and checked.flash_bytes == t.size(graph, "fast")["flash_bytes"]


def test_check_fits_counts_the_stack_and_the_input():
    """RAM: a model whose workspace fits but not with its input, scores and stack."""
    cfg = {
        "name": "ram_hog",
        "input": [3, 24, 20],  # 1440 B of input in RAM
        "layers": [
            {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1},  # 480 B workspace slot
            {"type": "blinear", "out_features": 8},
            {"type": "exit", "classes": 2},
        ],
    }
    graph = E.compile(random_model(cfg, 2))
    with pytest.raises(
        ResourceError,
        match=r"needs 1,929 B RAM, ATmega328P has 2,048 B \(1,664 B for the model\); largest: input 1,440 B",
    ):
        targets.get("avr").check_fits(graph, "fast", measure=False)


# ---------------------------------------------------------------------------------------
# emulator plumbing
# ---------------------------------------------------------------------------------------

HANG_AVR = "#include <avr/io.h>\nint main(void)\n{\n    for (;;) {\n        GPIOR0 = 0;\n    }\n}\n"
HANG_QEMU = "int main(void);\nint main(void)\n{\n    volatile int x = 0;\n    for (;;) {\n        x++;\n    }\n}\n"


def test_avr_hang_is_stopped_by_the_cycle_limit_and_the_wall_clock():
    t = need("avr")
    elf = t.build_program({"hang.c": HANG_AVR})
    with pytest.raises(ToolError, match="timed out: cycle limit of 200000 cycles"):
        t.emulate(elf, max_cycles=200_000)
    with pytest.raises(ToolError, match=r"simavr timed out after 1 s"):
        t.emulate(elf, timeout_s=1)


@pytest.mark.parametrize("target", ["cortex-m3", "rv32imc", "xtensa-lx106"])
def test_qemu_hang_is_stopped_by_the_timeout(target):
    t = need(target)
    elf = t.build_program({"hang.c": HANG_QEMU})
    with pytest.raises(ToolError, match=r"timed out after 1 s"):
        t.emulate(elf, timeout_s=1)


def test_harness_failure_is_reported():
    """A firmware that exits without the sentinel line fails, with its output."""
    t = need("cortex-m0")
    elf = t.build_program(
        {"fail.c": '#include <stdio.h>\nint main(void)\n{\n    printf("oops\\n");\n    return 3;\n}\n'}
    )
    emu = t.emulate(elf, timeout_s=30)
    assert emu.returncode == 3 and "oops" in emu.text
    with pytest.raises(ToolError, match="harness failed.*exit code 3"):
        t.check_verdict(emu, 1, elf)


def test_cli_run_verify_report_bench(tmp_path, capsys):
    need("rv32imc")
    model = random_model(EDGE[2], 5)
    ckpt = tmp_path / "m.pt"
    E.save(model, ckpt)
    graph = E.compile(model)
    x = inputs(graph, 2)
    np.save(tmp_path / "x.npy", x)
    assert (
        cli_main(
            [
                "-q",
                "run",
                str(ckpt),
                "--target",
                "rv32imc",
                "--input",
                str(tmp_path / "x.npy"),
                "--output",
                str(tmp_path / "o.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "o.npz") as npz:
        host = api.run(graph, x)
        np.testing.assert_array_equal(npz["scores"], host.scores)
        np.testing.assert_array_equal(npz["layer_0"], host.layers[0])
    assert cli_main(["-q", "verify", str(ckpt), "--target", "rv32imc", "--samples", "2"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert cli_main(["-q", "report", str(ckpt), "--target", "rv32imc", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["target"]["peak_stack_bytes"] > 0
    assert cli_main(["-q", "bench", str(ckpt), "--target", "rv32imc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["instructions"] > 0


def test_targets_are_registered():
    names = targets.names()
    for t in TARGETS:
        assert t in names
        obj = targets.get(t)
        assert obj.name == t and obj.description
        for method in ("run", "size", "bench", "check_fits"):
            assert callable(getattr(obj, method))
