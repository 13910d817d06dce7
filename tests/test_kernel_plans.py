"""The kernel plans: one pool range for Python and C, target traits, flags of the plans."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen import bits
from ebnn_codegen.codegen import model_context, render_model, render_runtime
from ebnn_codegen.codegen.kernel_plan import BinKernelPlan, U8KernelPlan
from ebnn_codegen.codegen.traits import PORTABLE, TargetTraits
from ebnn_codegen.ir import pool_ranges

POOLS = [None] + [(k, s, p) for k in (1, 2, 3) for s in (1, 2, 3) for p in range(k // 2 + 1)]


def test_pool_ranges_match_the_runtime(tmp_path: Path) -> None:
    """ir.pool_ranges (generated kernels) and pool_range in ebnn_runtime.c (generic kernel) agree."""
    require_tools("gcc", package="gcc")
    (tmp_path / "ebnn_runtime.h").write_text(render_runtime()["ebnn_runtime.h"])
    (tmp_path / "ebnn_runtime.c").write_text(render_runtime()["ebnn_runtime.c"])
    cases = [(n, m, pool) for pool in POOLS for n in range(1, 9) for m in range(1, 9)]
    lines = []
    for n, m, pool in cases:
        k, s, p = pool or (0, 1, 0)
        lines.append(f"for (c = 0; c < {n}; c++) {{ pool_range(c, {k}, {s}, {p}, {m}, &lo, &hi); ")
        lines.append('printf("%d %d\\n", lo, hi > lo ? hi : lo); }')
    main = '#include <stdio.h>\n#include "ebnn_runtime.c"\nint main(void) { int c, lo, hi;\n'
    (tmp_path / "t.c").write_text(main + "\n".join(lines) + "\nreturn 0; }\n")
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-std=c99", "-I", str(tmp_path), str(tmp_path / "t.c"), "-o", str(exe)], check=True)
    got = [
        tuple(map(int, line.split()))
        for line in subprocess.run([exe], capture_output=True, text=True).stdout.split("\n")
        if line
    ]
    want = [r for n, m, pool in cases for r in pool_ranges(n, m, pool)]
    assert got == want


def test_runtime_popcount_table_is_the_one_table() -> None:
    text = render_runtime()["ebnn_runtime.c"]
    table = text.split("ebnn_popcount8[256] EBNN_FLASH = {")[1].split("};")[0]
    assert [int(v) for v in table.replace(",", " ").split()] == list(bits.POPCOUNT8)
    assert bits.POPCOUNT8 == tuple(bin(v).count("1") for v in range(256))


def _binary_net(channels_out: int = 3, kernel: list[int] | None = None) -> dict:
    return {
        "name": "kp",
        "input": [1, 8, 8],
        "layers": [
            {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1},
            {"type": "bconv", "out_channels": channels_out, "kernel": kernel or [3, 3], "padding": 1},
            {"type": "exit", "classes": 3},
        ],
    }


def _plans(cfg: dict, traits: TargetTraits = PORTABLE, seed: int = 0):
    graph = E.compile(random_model(cfg, seed=seed))
    ctx = model_context(graph, "fast", {}, traits)
    return graph, [b.spec for b in ctx["blocks"]]


def test_plans_are_typed_and_the_swar_helpers_exist_once() -> None:
    graph, (first, second) = _plans(_binary_net())
    assert isinstance(first, U8KernelPlan) and isinstance(second, BinKernelPlan)
    assert second.uses_swar
    files = render_model(graph, "fast")
    # the SWAR popcount is defined once, in the runtime header, and used by the model's and the runtime's kernels
    for name in ("ebnn_swar_nib", "ebnn_swar_fold"):
        assert sum(f"uint32_t {name}(" in text for text in files.values()) == 1, name
        assert f"uint32_t {name}(" in files["ebnn_runtime.h"]
        assert f"{name}(" in files["kp.c"] and f"{name}(" in files["ebnn_runtime.c"]
    assert second.avr_asm and all(f.asm for f in second.filters)
    assert second.has_interior_class and second.border_bounds and second.interior_guard
    assert [r.lo for r in second.rows] == [lo for lo, _ in pool_ranges(8, 8, None)]


def test_traits_choose_the_code_shapes() -> None:
    cfg = _binary_net()
    graph = E.compile(random_model(cfg, seed=0))
    portable = render_model(graph, "fast")["kp.c"]
    no_asm = render_model(graph, "fast", traits=TargetTraits(asm_dialect=None))["kp.c"]
    pinned = render_model(graph, "fast", traits=TargetTraits(barrel_shifter=True))["kp.c"]
    no_shift = render_model(graph, "fast", traits=TargetTraits(barrel_shifter=False))["kp.c"]
    assert '__asm__("ldi r31' in portable and '__asm__("ldi r31' not in no_asm
    assert "__ARM_ARCH_6M__) /* Cortex-M0" in portable
    assert "__ARM_ARCH_6M__) /* Cortex-M0" not in pinned and "interior: the bounds as immediates" in pinned
    assert "interior: the bounds as immediates" not in no_shift
    with pytest.raises(ValueError):
        TargetTraits(asm_dialect="mips")


@pytest.mark.parametrize("traits", [PORTABLE, TargetTraits(asm_dialect=None, barrel_shifter=False)])
def test_traits_keep_the_bits(traits: TargetTraits, tmp_path: Path) -> None:
    """Every traits choice computes the same bits as the IR reference (host C, gcc)."""
    require_tools("gcc", package="gcc")
    from ebnn_codegen import reference
    from ebnn_codegen.cflags import STRICT_CFLAGS

    cfg = _binary_net(5)
    graph = E.compile(random_model(cfg, seed=2))
    files = render_model(graph, "fast", traits=traits)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    x = np.random.default_rng(0).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    main = tmp_path / "main.c"
    rows = ", ".join(str(int(v)) for v in x.reshape(-1))
    main.write_text(
        '#include <stdio.h>\n#include "kp.h"\n'
        f"static const uint8_t xs[] = {{ {rows} }};\n"
        "int main(void) { int32_t s[KP_NUM_CLASSES]; int i;\n"
        'for (i = 0; i < 6; i++) printf("%d\\n", kp_infer(xs + i * KP_INPUT_BYTES, s));\n return 0; }\n'
    )
    exe = tmp_path / "m"
    srcs = [str(tmp_path / f) for f in ("kp.c", "ebnn_runtime.c", "main.c")]
    subprocess.run(["gcc", *STRICT_CFLAGS, "-O2", "-I", str(tmp_path), *srcs, "-o", str(exe)], check=True)
    got = [int(v) for v in subprocess.run([exe], capture_output=True, text=True, check=True).stdout.split()]
    assert got == reference.run(graph, x).pred.tolist()


@pytest.mark.parametrize("target", ["avr", "cortex-m0", "cortex-m4", "rv32imc", "xtensa-lx106"])
def test_each_target_renders_with_its_traits_and_compiles_as_the_portable_c(target: str, tmp_path: Path) -> None:
    """A target's builds and ``export --target`` use its traits: the C holds only that chip's code shapes
    (no AVR assembly off AVR, no ARMv6-M guard), and compiles to the same object code as the portable C."""
    from ebnn_codegen import targets

    t = targets.get(target)
    require_tools(*t.tools, package=t.packages)
    graph = E.compile(random_model(_binary_net(), seed=0))
    own = render_model(graph, "fast", traits=t.traits)["kp.c"]
    assert ("EBNN_POPCOUNT8_PAGED" in own) == (target == "avr")
    assert ("__ARM_ARCH_6M__" in own) == (target == "avr")  # AVR keeps the portable 32-bit paths (ARM Arduinos)
    assert own != render_model(graph, "fast")["kp.c"] or target == "avr"
    objs = []
    for label, traits in (("portable", PORTABLE), ("own", t.traits)):
        d = tmp_path / label
        d.mkdir()
        for name, text in render_model(graph, "fast", traits=traits).items():
            (d / name).write_text(text)
        t.toolchain.compile(d / "kp.c", d / "kp.o", [d], target)
        dump = subprocess.run([t.toolchain.prefix + "objdump", "-d", str(d / "kp.o")], capture_output=True, text=True)
        objs.append(dump.stdout.split("\n", 3)[-1])
    assert objs[0] == objs[1] and len(objs[0]) > 1000
