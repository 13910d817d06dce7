"""The config language the importer needs: threshold blocks and max-pool after the sign.

Both are exact by construction in lowering (no kernel change): a threshold block gives its
sign runs directly; a pool after the sign negates the weights of every channel whose sign
decreases, so that ``sign -> max-pool`` equals the kernels' ``max-pool -> threshold``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen import api, targets
from ebnn_codegen.errors import ConfigError
from ebnn_codegen.ir import LE

AFTER = {
    "name": "after_sign",
    "input": [2, 10, 9],
    "layers": [
        {"type": "conv", "out_channels": 6, "kernel": 3, "padding": 1,
         "pool": {"kernel": 2, "stride": 2, "after_sign": True}},
        {"type": "bconv", "out_channels": 9, "kernel": [3, 2], "padding": 1,
         "pool": {"kernel": 3, "stride": 2, "padding": 1, "after_sign": True}},
        {"type": "blinear", "out_features": 12},
        {"type": "exit", "classes": 4},
    ],
}  # fmt: skip


def _threshold_config() -> dict:
    cfg = copy.deepcopy(AFTER)
    cfg["name"] = "thresholds"
    for layer in cfg["layers"][:-1]:
        layer["threshold"] = True
    cfg["layers"][0]["pool"]["after_sign"] = False  # pool before the threshold in block 0
    return cfg


def _random_thresholds(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            fan = block.spec.fan_in * (255 if block.spec.type == "conv" else 1)
            f = block.spec.out_channels
            span = max(1, int(fan**0.5 * (8 if block.spec.type == "conv" else 1)))
            block.act.threshold.copy_(torch.randint(-span, span + 1, (f,), generator=g, dtype=torch.int32))
            block.act.direction.copy_(torch.where(torch.rand(f, generator=g) < 0.5, 1, -1).to(torch.int8))
    return model.eval()


def test_pool_after_sign_is_an_or_of_the_signs() -> None:
    model = random_model(AFTER, seed=3, extreme=True)
    block = model.blocks[0]
    x = torch.from_numpy(api.random_inputs((2, 10, 9), 4)).float()
    with torch.no_grad():
        expected = torch.nn.functional.max_pool2d(torch.where(block.bn(block.conv(x)) >= 0, 1.0, -1.0), 2)
        assert torch.equal(block(x), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pool_after_sign_bit_exact(seed: int, tmp_path) -> None:
    model = random_model(AFTER, seed=seed, extreme=True)
    graph = api.compile(model)
    decreasing = [int(np.sum(np.asarray(b.bn.weight.detach()) < 0)) for b in model.blocks[:2]]
    assert sum(decreasing) > 0
    # decreasing channels became increasing ones on negated weights
    flipped = 0
    for ir_block, module in zip(graph.blocks[:2], model.blocks[:2]):
        w = torch.where(module.conv.weight >= 0, 1, -1).numpy()
        negated = np.all(ir_block.weights == -w, axis=(1, 2, 3))
        assert np.all(module.bn.weight.detach().numpy()[negated] < 0)  # only decreasing channels (γ < 0)
        assert not np.any(ir_block.direction == LE)  # a pool after the sign leaves no LE channel
        flipped += int(negated.sum())
    assert flipped > 0
    E.save(model, tmp_path / "m.pt")
    for kernels in ("fast", "reference") if seed == 0 else ("fast",):
        rep = api.verify(tmp_path / "m.pt", samples=48, seed=seed, kernels=kernels)
        assert rep.ok and rep.bit_mismatches == 0, rep.summary()


def test_threshold_blocks_bit_exact(tmp_path) -> None:
    model = _random_thresholds(E.build(_threshold_config()), seed=5)
    E.save(model, tmp_path / "t.pt")
    loaded = E.load(tmp_path / "t.pt")
    assert torch.equal(loaded.blocks[1].act.threshold, model.blocks[1].act.threshold)
    for kernels in ("fast", "reference"):
        rep = api.verify(loaded, samples=48, kernels=kernels)
        assert rep.ok and rep.bit_mismatches == 0, rep.summary()
    graph = api.compile(loaded)
    assert set(np.unique(graph.blocks[0].direction)) <= {-1, 0, 1}


@pytest.mark.emulator
def test_after_sign_and_thresholds_on_avr(tmp_path) -> None:
    t = targets.get("avr")
    require_tools(*t.tools, package=t.packages)
    require_tools("/usr/include/simavr/sim_avr.h", package="libsimavr-dev")
    for model in (random_model(AFTER, seed=7, extreme=True), _random_thresholds(E.build(_threshold_config()), 8)):
        rep = api.verify(model, samples=3, target="avr")
        assert rep.ok and rep.bit_mismatches == 0, rep.summary()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("layers", 0, "threshold"), 1, "layers[0].threshold must be true or false"),
        (("layers", 0, "pool", "after_sign"), "yes", "layers[0].pool.after_sign must be true or false"),
        (("layers", 3, "threshold"), True, "layers[3]: unknown field 'threshold'"),
    ],
)
def test_new_fields_are_validated(path: tuple, value, message: str) -> None:
    cfg = copy.deepcopy(AFTER)
    where = cfg
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        E.build(cfg)
