"""Each pass tested by running it: tiny IRs before and after, inputs exactly at the thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_model

import ebnn_codegen as E
from ebnn_codegen import reference
from ebnn_codegen.errors import LoweringError
from ebnn_codegen.ir import CONST, GE, LE
from ebnn_codegen.lower import lower, sign_runs
from ebnn_codegen.passes import (
    FoldBatchNormIntoThreshold,
    FoldExitBatchNormIntoFixedPoint,
    PackBinaryWeights,
    PlanBuffers,
    run_passes,
)
from ebnn_codegen.passes.fold_exit import INT32_MAX, choose_scale
from ebnn_codegen.passes.fold_threshold import fold_runs

pytestmark = pytest.mark.quick  # the pre-commit subset (pytest -m quick)


def test_fold_runs_cases() -> None:
    assert fold_runs([[-9, 1]], "x") == (0, CONST, 1)
    assert fold_runs([[-9, -1]], "x") == (0, CONST, -1)
    assert fold_runs([[-9, -1], [3, 1]], "x") == (3, GE, 0)
    assert fold_runs([[-9, 1], [-2, -1]], "x") == (-3, LE, 0)
    with pytest.raises(LoweringError, match="block 4 channel 2.*not monotonic"):
        fold_runs([[-9, -1], [0, 1], [2, -1]], "block 4 channel 2")


def _bn(gamma, beta, mean, var, eps=1e-5):
    bn = torch.nn.BatchNorm2d(len(gamma), eps=eps).eval()
    bn.weight.data = torch.tensor(gamma, dtype=torch.float32)
    bn.bias.data = torch.tensor(beta, dtype=torch.float32)
    bn.running_mean.data = torch.tensor(mean, dtype=torch.float32)
    bn.running_var.data = torch.tensor(var, dtype=torch.float32)
    return bn


def test_thresholds_exact_at_the_boundary() -> None:
    """For every integer in range, the folded comparison equals sign(BN(acc)) in torch."""
    bn = _bn(
        [1.0, -2.0, 0.0, 0.3, 5.0], [0.5, 0.1, -1.0, 0.0, -3.3], [3.0, -2.5, 0.0, 7.5, 0.2], [1.0, 4.0, 1.0, 1e-8, 9.0]
    )
    bound = 20
    runs = sign_runs(bn, bound, "t")
    accs = torch.arange(-bound, bound + 1, dtype=torch.float32)
    y = bn(accs.view(1, 1, -1, 1).expand(1, 5, -1, 1).contiguous())[0, :, :, 0]
    truth = torch.where(y >= 0, 1, -1).numpy()
    for c in range(5):
        t, d, k = fold_runs(runs[c], f"c{c}")
        a = np.arange(-bound, bound + 1)
        got = np.where(d == GE, a >= t, a <= t) if d != CONST else np.full(len(a), k > 0)
        assert np.array_equal(np.where(got, 1, -1), truth[c]), c
    # channel 2 has γ = 0, β < 0: constant -1; channel 1 has γ < 0: LE
    assert fold_runs(runs[2], "") == (0, CONST, -1)
    assert fold_runs(runs[1], "")[1] == LE


def test_fold_pass_runs_before_and_after(tiny_config) -> None:
    model = random_model(tiny_config, seed=3, extreme=True)
    raw = lower(model)
    assert all(b.sign_runs is not None for b in raw.hidden)
    folded, changed = FoldBatchNormIntoThreshold().apply(raw)
    assert changed and all(b.sign_runs is None and b.threshold is not None for b in folded.hidden)
    again, changed2 = FoldBatchNormIntoThreshold().apply(folded)
    assert not changed2
    full = run_passes(folded, (FoldExitBatchNormIntoFixedPoint(), PackBinaryWeights(), PlanBuffers()))
    x = np.random.default_rng(0).integers(0, 256, (16, *full.input_shape), dtype=np.uint8)
    res = reference.run(full, x)
    _, t_layers = E.api.torch_outputs(model, x)
    for a, b in zip(res.layers, t_layers):
        assert np.array_equal(a, b)


def test_run_passes_does_not_modify_its_input(tiny_config) -> None:
    raw = lower(random_model(tiny_config))
    out = run_passes(raw)
    assert raw.blocks[0].threshold is None and out.blocks[0].threshold is not None


def test_exit_scale_never_overflows() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(2, 12))
        a = rng.normal(size=k) * 10.0 ** rng.uniform(-6, 6)
        b = rng.normal(size=k) * 10.0 ** rng.uniform(-6, 9)
        bound = int(rng.integers(1, 70000))
        s = choose_scale(a, b, bound)
        mul, add = np.round(a * 2.0**s), np.round(b * 2.0**s)
        assert np.max(np.abs(mul) * bound + np.abs(add)) <= INT32_MAX
        if s < 30:  # the next scale up would overflow
            mul2, add2 = np.round(a * 2.0 ** (s + 1)), np.round(b * 2.0 ** (s + 1))
            assert np.max(np.abs(mul2) * bound + np.abs(add2)) > INT32_MAX


def test_pack_pass_roundtrips(tiny_config) -> None:
    graph = E.compile(random_model(tiny_config))
    for b in graph.blocks:
        assert np.array_equal(reference.block_weights(b), b.weights)


def test_buffer_plan_is_exact(tiny_config) -> None:
    graph = E.compile(random_model(tiny_config))
    sizes = [b.out_bytes for b in graph.hidden]
    assert graph.buffers["workspace_bytes"] == max(sizes[0::2]) + max(sizes[1::2])
    assert graph.buffers["trace_bytes"] == sum(sizes)


def test_ir_save_load_roundtrip(tmp_path, tiny_config) -> None:
    from ebnn_codegen import ir

    graph = E.compile(random_model(tiny_config))
    ir.save(graph, tmp_path / "ir")
    back = ir.load(tmp_path / "ir")
    x = np.random.default_rng(0).integers(0, 256, (8, *graph.input_shape), dtype=np.uint8)
    a, b = reference.run(graph, x), reference.run(back, x)
    assert np.array_equal(a.scores, b.scores)
    assert back.buffers == graph.buffers
