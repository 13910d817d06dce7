"""The fit check on each target, models either side of the limit; verification on the named chip; empty inputs.

Measured either side of a limit on every target (compile, link, one emulated inference each):

* RAM, every target: two models that both pass the IR's prediction (static + input + scores);
  the peak stack measured in the emulator refuses the bigger one, with the ELF's and the
  emulator's numbers;
* flash, avr, cortex-m0 and cortex-m3: two models whose constants both fit; their code, as
  linked, pushes the bigger one over.  (The flash budgets of cortex-m4, rv32imc and
  xtensa-lx106, 496 to 768 KB, need that much weights compiled twice: 13 to 23 s a target;
  there the flash side is predicted from the IR before any build, below.)

The numbers of a refusal are the ones the linker's ELF gives (nm) and the emulator measures,
never the linker's text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen import api, targets
from ebnn_codegen.cli import main as cli_main
from ebnn_codegen.errors import CodegenError, FitError, LinkOverflowError, StackWindowError
from ebnn_codegen.resources import resource_dir
from ebnn_codegen.targets import elfsize, fit
from ebnn_codegen.targets.chips import CHIPS
from ebnn_codegen.targets.harness import MODE_SIZE, sample_input
from ebnn_codegen.targets.mcu import OVERFLOW_MARK
from ebnn_codegen.targets.toolchain import link_overflow


def need(name: str):
    t = targets.get(name)
    require_tools(*t.tools, package=t.packages)
    if name == "avr":
        require_tools("/usr/include/simavr/sim_avr.h", package="libsimavr-dev")
    return t


def wide(out: int, name: str = "edge") -> dict:
    """256 B of blinear weights per output: the flash of the model grows in steps of 256 B."""
    return {
        "name": f"{name}{out}",
        "input": [1, 16, 16],
        "layers": [
            {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1},
            {"type": "blinear", "out_features": out},
            {"type": "exit", "classes": 4},
        ],
    }


def numbers(msg: str) -> int:
    found = re.search(r"needs ([\d,]+) B flash", msg)
    assert found, msg
    return int(found.group(1).replace(",", ""))


# ---------------------------------------------------------------------------------------
# without tools
# ---------------------------------------------------------------------------------------


@pytest.mark.quick
def test_link_overflow_is_parsed_once_into_a_typed_error():
    e = link_overflow("ld: region `text' overflowed by 8270 bytes\ncollect2: error")
    assert isinstance(e, LinkOverflowError) and e.region == "text" and e.overflow_bytes == 8270 and e.is_flash
    e = link_overflow("section `.bss' will not fit in region `data'")
    assert e is not None and e.region == "data" and e.overflow_bytes is None and not e.is_flash
    assert link_overflow("undefined reference to `foo'") is None


@pytest.mark.quick
def test_refusal_names_the_numbers_and_the_largest_part():
    graph = E.compile(random_model(wide(128), 1))
    with pytest.raises(FitError) as info:
        fit.judge("avr", CHIPS["atmega328p"], graph, "fast", fit.predicted(graph))
    msg = str(info.value)
    weights = api.report(graph)["totals"]["flash_bytes"]
    assert f"needs {weights:,} B flash, ATmega328P has 32,256 B after its bootloader (30,208 B for the model)" in msg
    assert "largest: block 1 weights 32,768 B" in msg


@pytest.mark.quick
@pytest.mark.parametrize(
    "target,out", [("cortex-m0", 980), ("cortex-m4", 2000), ("rv32imc", 3080)], ids=["m0", "m4", "rv32"]
)
def test_big_chips_refuse_from_the_ir_before_any_build(target, out):
    graph = E.compile(random_model(wide(out), 1))
    chip = targets.get(target).chip
    weights = api.report(graph)["totals"]["flash_bytes"]
    assert weights > chip.flash_budget  # just over: by less than 4 %
    assert weights < 1.04 * chip.flash_budget
    with pytest.raises(FitError, match=f"needs {weights:,} B flash, {chip.name} has"):
        api.check_fits(graph, target, measure=False)


# ---------------------------------------------------------------------------------------
# measured, either side of the limit
# ---------------------------------------------------------------------------------------


# (target, under, over): blinear widths (256 B of weights each) whose constants both fit the budget, so the
# IR's prediction lets both through, and whose code + constants as linked fall either side of it
EDGES = [("avr", 96, 100), ("cortex-m0", 916, 940), ("cortex-m3", 195, 208)]
RAM_TARGETS = ["avr", "cortex-m0", "cortex-m3", "cortex-m4", "rv32imc", "xtensa-lx106"]


def linked(t, graph) -> tuple[elfsize.ModelSizes, dict[str, int], tuple, Path]:
    """The model's sizes in its SIZE firmware (nm), the whole image (size), its compiled objects and the ELF."""
    model = t.model_objects(graph, "fast")
    elf, _ = t.build_kept(graph, "fast", MODE_SIZE, sample_input(graph))
    return elfsize.model_sizes_of(t.toolchain, elf, model[1]), t.image_sizes(elf), model, elf


def smallest_application(t, graph, model, d) -> dict[str, int]:
    """Link the model into the smallest application (the target's start-up code and a main that
    classifies one input): the whole image as the target's ``size`` counts it."""
    model_dir, model_objs = model
    (d / "main.c").write_text(
        f'#include "{graph.name}.h"\nstatic uint8_t in[{graph.input_bytes}];\n'
        f"static int32_t s[{graph.num_classes}];\nint main(void) {{ return {graph.name}_infer(in, s); }}\n"
    )
    fw = resource_dir("firmware")
    t._link(d, [d / "main.c", *(fw / s for s in t.link.sources)], [model_dir], model_objs)
    assert not (d / OVERFLOW_MARK).exists()
    return t.image_sizes(d / "firmware.elf")


@pytest.mark.emulator
@pytest.mark.parametrize("target,under,over", EDGES, ids=[e[0] for e in EDGES])
def test_either_side_of_the_limit(target, under, over, tmp_path):
    """Measured on every target: the refusal's numbers are the linked ELF's (nm) and the emulator's
    (peak stack); the linker's whole image grows by what the check counts; a model the check lets
    through fits the chip's real flash and RAM beside the smallest application."""
    t = need(target)
    g_under = E.compile(random_model(wide(under), 1))
    g_over = E.compile(random_model(wide(over), 1))
    budget = t.chip.flash_budget
    # the prediction (constants only) lets both through: only the measurement tells them apart
    assert api.report(g_over)["totals"]["flash_bytes"] < budget
    api.check_fits(g_over, target, measure=False)

    ok = api.check_fits(g_under, target)
    m_u, image_u, model_u, elf_u = linked(t, g_under)
    stack = t.stack_of(t.measure(elf_u))  # the emulator's run of the check (once per ELF and process)
    assert ok.measured and ok.flash_bytes == m_u.flash_bytes <= budget
    assert 0 < stack < 4096
    ram = m_u.sram_bytes + g_under.input_bytes + 4 * g_under.num_classes + stack
    assert ok.sram_needed_bytes == ram <= t.chip.sram_budget

    with pytest.raises(FitError) as info:
        api.check_fits(g_over, target)
    m_o, image_o, _, _ = linked(t, g_over)
    msg = str(info.value)
    assert numbers(msg) == m_o.flash_bytes > budget, msg
    assert f"measured: code {m_o.code_bytes:,} B + constants {m_o.constant_bytes + m_o.data_bytes:,} B" in msg

    # nothing the model adds is missed: the linker's image grows by what the check counts, give or take
    # the linker's alignment padding (the AVR's popcount table is 256-byte aligned)
    grown = image_o["image_flash_bytes"] - image_u["image_flash_bytes"]
    assert abs(grown - (m_o.flash_bytes - m_u.flash_bytes)) < (256 if target == "avr" else 16)
    # what the check lets through fits the real chip beside the smallest application
    app = smallest_application(t, g_under, model_u, tmp_path)
    assert app["image_flash_bytes"] <= t.chip.flash_after_bootloader
    assert app["image_flash_bytes"] - m_u.flash_bytes <= t.chip.flash_reserved - t.chip.bootloader_bytes
    assert app["image_sram_bytes"] + stack <= t.chip.sram_bytes


def tall(h: int, w: int, classes: int) -> dict:
    """RAM of the model: mostly its input (h×w bytes), fine-tuned by its scores (4 B a class)."""
    return {
        "name": f"tall{h}x{w}c{classes}",
        "input": [1, h, w],
        "layers": [
            {"type": "conv", "out_channels": 1, "kernel": 4, "stride": 4, "pool": {"kernel": 4, "stride": 4}},
            {"type": "blinear", "out_features": 16},
            {"type": "exit", "classes": classes},
        ],
    }


def predicted_ram(cfg: dict):
    graph = E.compile(random_model(cfg, 1))
    return graph, fit.predicted(graph).sram_bytes


def ram_edge(budget: int):
    """The model whose predicted RAM (static + input + scores, no stack) is the largest within
    ``budget`` (within 4 B of it), and one 1 KB smaller: the measured peak stack tells them apart."""
    n = max(256, budget - 2500)
    w = min(1020, max(16, n // 16))  # the blinear after the conv sees at most 255 columns
    h, classes = max(16, n // w), 16
    _, ram = predicted_ram(tall(h, w, classes))
    while ram > budget - 1024:  # room for 256 to 1024 classes
        h -= max(1, (ram - budget + 2500) // w)
        _, ram = predicted_ram(tall(h, w, classes))
    classes += (budget - ram) // 4
    over, ram = predicted_ram(tall(h, w, classes))
    while ram > budget:
        classes -= 1
        over, ram = predicted_ram(tall(h, w, classes))
    assert budget - 4 < ram <= budget, (budget, ram)
    return predicted_ram(tall(h, w, classes - 256))[0], over


@pytest.mark.emulator
@pytest.mark.parametrize("target", RAM_TARGETS)
def test_either_side_of_the_ram_limit(target):
    """Both models pass the IR's prediction (no stack); the stack measured in the emulator refuses
    the bigger one, and the refusal's RAM is the ELF's static RAM (nm) + input + scores + that stack."""
    t = need(target)
    budget = t.chip.sram_budget
    g_under, g_over = ram_edge(budget)
    api.check_fits(g_over, target, measure=False)

    ok = api.check_fits(g_under, target)
    m_u, _, _, elf_u = linked(t, g_under)
    stack_u = t.stack_of(t.measure(elf_u))
    assert 0 < stack_u
    assert ok.sram_needed_bytes == m_u.sram_bytes + g_under.input_bytes + 4 * g_under.num_classes + stack_u <= budget

    with pytest.raises(FitError) as info:
        api.check_fits(g_over, target)
    m_o, _, _, elf_o = linked(t, g_over)
    try:
        stack_o, bound = t.stack_of(t.measure(elf_o)), ""
    except StackWindowError as short:  # the nRF51822's 16 KB: the stack met the static RAM
        stack_o, bound = short.window + 1, "at least "
    needed = m_o.sram_bytes + g_over.input_bytes + 4 * g_over.num_classes + stack_o
    msg = str(info.value)
    assert needed > budget and f"needs {bound}{needed:,} B RAM, {t.chip.name} has" in msg, msg
    assert f"largest: input {g_over.input_bytes:,} B" in msg or "largest: scores" in msg, msg


@pytest.mark.emulator
def test_a_model_whose_code_overflows_the_uno_is_refused_with_numbers(tmp_path, capsys):
    """Constants fit (28,701 B of 30,208 B); code pushes the image past the flash: the linker
    overflows, and every command says so as a fit error (exit 2), never the linker's text."""
    need("avr")
    cfg = {
        "name": "code_heavy",
        "input": [1, 28, 28],
        "layers": [
            {"type": "conv", "out_channels": 12, "kernel": 5, "padding": 2, "pool": {"kernel": 2, "stride": 2}},
            {"type": "bconv", "out_channels": 24, "kernel": 3},
            {"type": "blinear", "out_features": 64},
            {"type": "exit", "classes": 10},
        ],
    }
    model = random_model(cfg, 1)
    ckpt = tmp_path / "m.pt"
    E.save(model, ckpt)
    assert api.report(E.compile(model))["totals"]["flash_bytes"] == 28701
    x = np.zeros((1, 1, 28, 28), np.uint8)
    np.save(tmp_path / "x.npy", x)
    commands = [
        ["export", str(ckpt), "--target", "avr", "-o", str(tmp_path / "out")],
        ["export", str(ckpt), "--target", "avr", "--format", "arduino", "-o", str(tmp_path / "ard")],
        ["run", str(ckpt), "--target", "avr", "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "o.npz")],
        ["verify", str(ckpt), "--target", "avr", "--samples", "2"],
        ["report", str(ckpt), "--target", "avr"],
        ["bench", str(ckpt), "--target", "avr"],
    ]
    for argv in commands:
        capsys.readouterr()
        assert cli_main(["-q", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert re.search(r"^error: model 'code_heavy' \(fast kernels\) does not fit avr: needs [\d,]+ B flash", err), (
            err
        )
        assert "largest:" in err and "overflowed" not in err and "region" not in err, err
    assert not any((tmp_path / d).exists() for d in ("out", "ard", "o.npz"))


# ---------------------------------------------------------------------------------------
# verification on the chip that was named
# ---------------------------------------------------------------------------------------


@pytest.mark.emulator
def test_90_samples_verify_on_the_atmega328p_in_batches(tmp_path, capsys):
    need("avr")
    cfg = {
        "name": "batchy",
        "input": [1, 20, 20],  # 400-byte inputs: 90 of them need two ELFs
        "layers": [{"type": "conv", "out_channels": 4, "kernel": 3, "stride": 2}, {"type": "exit", "classes": 3}],
    }
    ckpt = tmp_path / "m.pt"
    E.save(random_model(cfg, 3), ckpt)
    assert (
        cli_main(["-q", "verify", str(ckpt), "--target", "avr", "--samples", "90", "--json", str(tmp_path / "v.json")])
        == 0
    )
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "PASS: 90 samples on avr (ATmega328P, fast kernels)", first
    rep = json.loads((tmp_path / "v.json").read_text())
    assert list(rep)[:3] == ["target", "chip", "chip_note"]
    assert rep["chip"] == "ATmega328P" and rep["chip_note"] is None and rep["samples"] == 90 and rep["ok"]
    result = api.run(ckpt, api.random_inputs((1, 20, 20), 90), target="avr")
    assert result.stats["chip"] == "ATmega328P" and result.stats["samples_per_elf"] < 90


@pytest.mark.emulator
def test_a_bigger_chip_is_named_in_the_first_line():
    """Fits the Uno (deployment RAM 1.4 KB), but the verification harness keeps a trace of every block."""
    need("avr")
    cfg = {
        "name": "tracey",
        "input": [1, 16, 16],
        "layers": [
            {"type": "conv", "out_channels": 16, "kernel": 3, "padding": 1},
            {"type": "bconv", "out_channels": 16, "kernel": 3, "padding": 1},
            {"type": "blinear", "out_features": 8},
            {"type": "exit", "classes": 3},
        ],
    }
    model = random_model(cfg, 2)
    api.check_fits(model, "avr")  # deployable on the Uno
    rep = api.verify(model, samples=3, target="avr")
    assert rep.ok and rep.chip == "ATmega644P" and "verification harness needs" in (rep.chip_note or "")
    assert (
        rep.summary().splitlines()[0].startswith("PASS: 3 samples on avr (emulated ATmega644P, NOT the target's chip")
    )
    assert rep.as_dict()["chip"] == "ATmega644P"


# ---------------------------------------------------------------------------------------
# empty inputs: one behaviour everywhere
# ---------------------------------------------------------------------------------------


@pytest.mark.quick
def test_empty_input_is_refused_by_every_command(tmp_path, capsys, tiny_config):
    model = random_model(tiny_config, 1)
    ckpt = tmp_path / "m.pt"
    E.save(model, ckpt)
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 1, 9, 7), np.uint8))
    runs = {
        "run": ["run", str(ckpt), "--input", str(empty), "--output", str(tmp_path / "o.npz")],
        "verify": ["verify", str(ckpt), "--input", str(empty), "--json", str(tmp_path / "v.json")],
    }
    for argv in runs.values():
        capsys.readouterr()
        assert cli_main(["-q", *argv]) == 2
        assert capsys.readouterr().err.splitlines()[0] == f"error: input {empty} holds no samples"
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "v.json").exists()
    assert cli_main(["-q", "bench", str(ckpt), "--samples", "0"]) == 2
    assert "error: --samples must be >= 1, got 0" in capsys.readouterr().err
    assert cli_main(["-q", "verify", str(ckpt), "--samples", "0"]) == 2
    with pytest.raises(CodegenError, match="the input holds no samples"):
        api.run(model, np.zeros((0, 1, 9, 7), np.uint8))
    with pytest.raises(CodegenError, match="the input holds no samples"):
        api.verify(model, np.zeros((0, 1, 9, 7), np.uint8))


@pytest.mark.emulator
def test_a_target_run_past_the_fit_check_still_refuses_with_numbers():
    """Calling a target directly (no fit check first): the overflowing link is a FitError, not the linker's text."""
    t = need("cortex-m0")  # qemu's microbit has the nRF51822's real 256 KB of flash (the mps2 boards have 4 MB)
    graph = E.compile(random_model(wide(1050), 1))  # 268,800 B of weights
    with pytest.raises(FitError, match=r"its firmware overflows the nRF51822's flash by [\d,]+ B \(image"):
        t.run(graph, np.zeros((1, 1, 16, 16), np.uint8))
