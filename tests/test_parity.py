"""Parity at every level on the same vectors: torch eval ⇄ IR reference ⇄ host C.

(a) host C against the IR reference: identical bits for every block and
    identical scores, for hundreds of seeded random architectures, both kernel
    strategies;
(b) IR reference against torch: identical ±1 outputs for every hidden block,
    scores within the fixed-point resolution, identical argmax wherever the two
    best float scores are further apart than that resolution.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
from conftest import random_config, random_model

import ebnn_codegen as E
from ebnn_codegen import api, reference
from ebnn_codegen.targets import host

N_ARCH = int(os.environ.get("EBNN_PARITY_ARCHS", "240"))
GROUP = 40  # models per shared library
N_SAMPLES = 24

GROUPS = range(max(1, N_ARCH // GROUP))


def _graphs(group: int):
    out = []
    for k in range(GROUP):
        seed = group * GROUP + k
        rng = np.random.default_rng(seed)
        cfg = random_config(rng, name=f"p{seed}")
        model = random_model(cfg, seed=seed, extreme=(seed % 3 == 0))
        out.append((model, E.compile(model)))
    return out


@functools.cache
def check_group(group: int) -> dict[str, int]:
    """Run and check one group of architectures (once per session); its totals."""
    stats = {"architectures": 0, "blocks": 0, "bits": 0, "mismatches": 0, "ambiguous": 0, "samples": 0}
    pairs = _graphs(group)
    graphs = [g for _, g in pairs]
    libs = {k: host.build(graphs, k) for k in ("fast", "reference")}
    for model, graph in pairs:
        x = api.random_inputs(graph.input_shape, N_SAMPLES, seed=len(graph.name))
        ref = reference.run(graph, x)
        # (a) C == reference, bit for bit, both strategies
        for kernels, lib in libs.items():
            res = host.run(graph, x, kernels, lib=lib)
            assert np.array_equal(res.scores, ref.scores), (graph.name, kernels)
            assert np.array_equal(res.pred, ref.pred), (graph.name, kernels)
            for i, (a, b) in enumerate(zip(res.layers, ref.layers)):
                assert np.array_equal(a, b), (graph.name, kernels, i)
        # (b) reference == torch
        t_scores, t_layers = api.torch_outputs(model, x)
        for i, (a, b) in enumerate(zip(ref.layers, t_layers)):
            assert a.shape == b.shape
            mism = int((a != b).sum())
            stats["bits"] += a.size
            stats["mismatches"] += mism
            assert mism == 0, f"{graph.name} block {i}: {mism} bits differ from torch"
        tol = api.score_tolerance(graph)
        err = np.abs(ref.scores / graph.score_scale - t_scores)
        assert np.all(err <= tol[None]), (graph.name, float(err.max()), float(tol.max()))
        top2 = np.sort(t_scores, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * tol.max()
        assert np.array_equal(ref.pred[clear], t_scores.argmax(1)[clear]), graph.name
        stats["ambiguous"] += int((~clear).sum())
        stats["architectures"] += 1
        stats["blocks"] += len(graph.hidden)
        stats["samples"] += len(x)
    return stats


@pytest.mark.parametrize("group", GROUPS)
def test_random_architectures(group: int) -> None:
    assert check_group(group)["architectures"] == GROUP


def test_parity_summary(capsys) -> None:
    """The totals over every group (each group runs once per session, whatever the test order)."""
    totals: dict[str, int] = {}
    for group in GROUPS:
        for key, value in check_group(group).items():
            totals[key] = totals.get(key, 0) + value
    with capsys.disabled():
        print(f"\nparity totals: {totals}")
    assert totals["architectures"] == len(GROUPS) * GROUP
    assert totals["samples"] == totals["architectures"] * N_SAMPLES
    assert totals["bits"] > 0 and totals["mismatches"] == 0


def test_sanitizers(tiny_config) -> None:
    """The generated code runs clean under AddressSanitizer and UndefinedBehaviorSanitizer."""
    for seed in range(4):
        cfg = random_config(np.random.default_rng(1000 + seed), name=f"san{seed}") if seed else tiny_config
        model = random_model(cfg, seed=seed, extreme=True)
        graph = E.compile(model)
        x = api.random_inputs(graph.input_shape, 8, seed=seed)
        ref = reference.run(graph, x)
        for kernels in ("fast", "reference"):
            res = host.run_sanitized(graph, x, kernels)
            assert np.array_equal(res.scores, ref.scores)
            assert all(np.array_equal(a, b) for a, b in zip(res.layers, ref.layers))


def test_extreme_batch_norm_statistics(tiny_config) -> None:
    """γ < 0, γ = 0, tiny variance, large mean: exact bits, constant channels where the sign never changes."""
    model = random_model(tiny_config, seed=7, extreme=True)
    bn = model.blocks[0].bn
    bn.running_mean.data[2] = 1e6  # far outside the accumulator range: constant -1 or +1
    bn.weight.data[4] = -3.0
    graph = E.compile(model)
    from ebnn_codegen.ir import CONST, LE

    b0 = graph.blocks[0]
    assert b0.direction[0] == CONST  # γ = 0
    assert b0.direction[2] == CONST
    assert b0.direction[4] == LE  # γ < 0 flips the comparison
    rep = E.verify(model, samples=128)
    assert rep.ok, rep.summary()
