"""The bit-sliced binary conv kernel of the 32-bit targets (ebnn_codegen.codegen.sliced).

Its carry-save adders and its bound compare are evaluated here in Python on random words, lane by
lane, against plain integer sums; its C runs against the IR reference on shapes that cover each
lane layout and pooling case, on the host (and under ASan/UBSan).  The MCU targets run the same C
in the random-architecture parity tests (tests/test_targets_mcu.py).
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from conftest import random_config, random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen import api, reference
from ebnn_codegen.cflags import STRICT_CFLAGS
from ebnn_codegen.codegen import render_model
from ebnn_codegen.codegen.carry_save import Emitter, compare, count
from ebnn_codegen.targets import host

MASK = 0xFFFFFFFF


def _evaluate(lines: list[str], env: dict[str, int]) -> dict[str, int]:
    """Run the emitted C statements (``const uint32_t t = expr;``) on Python ints."""
    for line in lines:
        m = re.fullmatch(r"const uint32_t (\w+) = (.*);", line)
        if m is None:
            assert line.startswith(("EBNN_ORDER", "/*")), line
            continue
        expr = re.sub(r"(\w+)\[(\d+)\]", r"\1_\2", m.group(2)).replace("u", "")
        env[m.group(1)] = eval(expr, {}, env) & MASK  # noqa: S307 - our own generated expressions
    return env


def _lane_bits(word: int) -> np.ndarray:
    return (word >> np.arange(32, dtype=np.uint64).astype(object)) & 1


@pytest.mark.parametrize("seed", range(12))
def test_carry_save_sums_are_exact(seed: int) -> None:
    """Weighted planes with both polarities sum to the integer sum of their lanes."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 90))
    levels = rng.integers(0, 3, n)
    pols = rng.random(n) < 0.5
    words = [int(w) for w in rng.integers(0, 1 << 32, n, dtype=np.uint64)]
    em = Emitter("t")
    out = count(em, [(int(lv), f"p_{i}", bool(p)) for i, (lv, p) in enumerate(zip(levels, pols))])
    env = _evaluate([s for _, s in em.stmts], {f"p_{i}": w for i, w in enumerate(words)})
    want = sum((1 - _lane_bits(w) if p else _lane_bits(w)) << int(lv) for w, lv, p in zip(words, levels, pols))
    got = sum((1 - _lane_bits(env[v]) if p else _lane_bits(env[v])) << k for k, (v, p) in out.items())
    assert list(got) == list(want)
    ops = sum(len(re.findall(r"[\^&|]", s)) for _, s in em.stmts)
    assert ops <= 5 * n  # 5 operations a 3-to-2 step, whatever the polarities


@pytest.mark.parametrize("seed", range(12))
def test_bound_compare_is_exact(seed: int) -> None:
    """``V < B'`` lane by lane, B' differing between lanes and between two group classes."""
    rng = np.random.default_rng(100 + seed)
    nv = int(rng.integers(1, 9))
    v_words = {k: int(w) for k, w in enumerate(rng.integers(0, 1 << 32, nv, dtype=np.uint64)) if rng.random() < 0.9}
    pols = {k: bool(rng.random() < 0.5) for k in v_words}
    b_vals = rng.integers(0, 1 << nv, (2, 32))
    b_vals[:, rng.random(32) < 0.5] = b_vals[0, 0]  # many equal lanes: immediates and table words
    if seed % 3 == 0:
        b_vals[1] = b_vals[0]
    nbits = max(int(b_vals.max()).bit_length(), 1)
    planes = np.zeros((2, nbits), np.int64)
    for k in range(nbits):
        planes[:, k] = ((b_vals >> k) & 1) @ (np.int64(1) << np.arange(32, dtype=np.int64))
    care = int(rng.integers(1, 1 << 32))
    em = Emitter("t")
    table: list[list[int]] = []
    lt = compare(em, {k: (f"v_{k}", pols[k]) for k in v_words}, planes, care, table)
    value = sum(_lane_bits(w) << k for k, w in v_words.items())
    for gc in range(2):
        env = {f"v_{k}": (w ^ MASK if pols[k] else w) for k, w in v_words.items()}
        env.update({f"bq_{n}": col[gc] for n, col in enumerate(table)})
        env = _evaluate([s for _, s in em.stmts], env)
        result = 0 if lt == "0u" else env[lt] if lt in env else eval(lt.replace("u", ""), {}, env) & MASK
        lanes = _lane_bits(result)
        for lane in range(32):
            if care >> lane & 1:
                assert lanes[lane] == int(value[lane] < b_vals[gc, lane]), (gc, lane)


def _net(input_hw: tuple[int, int], bconv: dict, channels: int = 8) -> dict:
    return {
        "name": "sl",
        "input": [1, *input_hw],
        "layers": [
            {"type": "conv", "out_channels": channels, "kernel": 3, "padding": 1},
            {"type": "bconv", **bconv},
            {"type": "blinear", "out_features": 12},
            {"type": "exit", "classes": 3},
        ],
    }


# Each lane layout and pooling case: (name, config, the layout the kernel must choose).
SHAPES = [
    (
        "uno_like",
        _net(
            (14, 14), {"out_channels": 16, "kernel": 3, "padding": 1, "pool": {"kernel": 3, "stride": 2, "padding": 1}}
        ),
        "2 conv rows of 16 lanes",
    ),
    (
        "odd_rows_no_pool",
        _net((7, 9), {"out_channels": 10, "kernel": 3, "padding": 1}, channels=12),
        "2 conv rows of 16 lanes",
    ),
    (
        "pool_2x2",
        _net(
            (12, 13),
            {"out_channels": 9, "kernel": [3, 2], "padding": [1, 0], "pool": {"kernel": 2, "stride": 2}},
            channels=3,
        ),
        "2 conv rows of 16 lanes",
    ),
    (
        "wide_rows",
        _net(
            (5, 26),
            {
                "out_channels": 8,
                "kernel": 3,
                "padding": 1,
                "pool": {"kernel": [2, 3], "stride": [1, 2], "padding": [0, 1]},
            },
        ),
        "1 conv row of 32 lanes",
    ),
    (
        "kernel_5_pad_2",
        _net((9, 11), {"out_channels": 17, "kernel": 5, "padding": 2, "pool": {"kernel": 3, "stride": 3}}, channels=5),
        "2 conv rows of 16 lanes",
    ),
    (
        "no_padding",
        _net((10, 10), {"out_channels": 7, "kernel": 3, "pool": {"kernel": 2, "stride": 1}}, channels=16),
        "2 conv rows of 16 lanes",
    ),
]


@pytest.mark.parametrize("name,config,layout", SHAPES, ids=[s[0] for s in SHAPES])
def test_sliced_kernel_matches_the_reference(name: str, config: dict, layout: str) -> None:
    for seed, extreme in ((1, False), (2, True)):
        graph = E.compile(random_model(config, seed=seed, extreme=extreme))
        text = render_model(graph, "fast")["sl.c"]
        assert f"bit-sliced (docs/speed.md): the conv positions are the lanes of a word\n * ({layout})" in text
        x = api.random_inputs(graph.input_shape, 16, seed=seed)
        ref = reference.run(graph, x)
        res = host.run(graph, x, "fast")
        assert all(np.array_equal(a, b) for a, b in zip(res.layers, ref.layers)), name
        assert np.array_equal(res.scores, ref.scores)


def test_sliced_kernel_under_sanitizers() -> None:
    graph = E.compile(random_model(SHAPES[1][1], seed=3, extreme=True))
    x = api.random_inputs(graph.input_shape, 8, seed=3)
    res = host.run_sanitized(graph, x, "fast")
    assert all(np.array_equal(a, b) for a, b in zip(res.layers, reference.run(graph, x).layers))


def test_random_architectures_reach_the_sliced_kernel() -> None:
    """The random architectures of the parity tests exercise the kernel (and the fallback)."""
    sliced = other = 0
    for seed in range(120):
        cfg = random_config(np.random.default_rng(seed), name=f"p{seed}")
        graph = E.compile(random_model(cfg, seed=seed))
        text = render_model(graph, "fast")[f"p{seed}.c"]
        n = text.count("bit-sliced (docs/speed.md)")
        sliced += n
        other += sum(1 for b in graph.hidden if b.kind == "bconv") - n
    assert sliced >= 10 and other >= 10, (sliced, other)


def test_compact_build_keeps_the_bits_in_smaller_code(tmp_path) -> None:
    """``-DEBNN_COMPACT``: the word kernel instead of the bit-sliced one, the same scores, less code."""
    require_tools("gcc", "size", package="gcc binutils")
    graph = E.compile(random_model(SHAPES[0][1], seed=4, extreme=True))
    for name, text in render_model(graph, "fast").items():
        (tmp_path / name).write_text(text)
    x = api.random_inputs(graph.input_shape, 6, seed=4)
    rows = ", ".join(str(int(v)) for v in x.reshape(-1))
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "sl.h"\n'
        f"static const uint8_t xs[] = {{ {rows} }};\n"
        "int main(void) { int32_t s[SL_NUM_CLASSES]; int i, k;\n"
        "for (i = 0; i < 6; i++) { sl_infer(xs + i * SL_INPUT_BYTES, s);\n"
        '  for (k = 0; k < SL_NUM_CLASSES; k++) printf("%ld\\n", (long)s[k]); }\n return 0; }\n'
    )
    want = reference.run(graph, x).scores.reshape(-1).tolist()
    sizes = {}
    for flags in ((), ("-DEBNN_COMPACT",)):
        exe = tmp_path / f"m{len(flags)}"
        srcs = [str(tmp_path / f) for f in ("sl.c", "ebnn_runtime.c", "main.c")]
        subprocess.run(["gcc", *STRICT_CFLAGS, "-O2", *flags, "-I", str(tmp_path), *srcs, "-o", str(exe)], check=True)
        out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout.split()
        assert [int(v) for v in out] == want, flags
        obj = tmp_path / f"sl{len(flags)}.o"
        subprocess.run(["gcc", *STRICT_CFLAGS, "-O2", *flags, "-c", str(tmp_path / "sl.c"), "-o", str(obj)], check=True)
        size = subprocess.run(["size", str(obj)], capture_output=True, text=True, check=True).stdout.split("\n")[1]
        sizes[flags] = int(size.split()[0])
    assert sizes[("-DEBNN_COMPACT",)] < sizes[()]
