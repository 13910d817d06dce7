"""Config validation: every error names the field."""

from __future__ import annotations

import copy

import pytest

from ebnn_codegen.config import parse_config
from ebnn_codegen.errors import ConfigError

pytestmark = pytest.mark.quick  # the pre-commit subset (pytest -m quick)

BASE = {
    "name": "m",
    "input": [1, 12, 9],
    "layers": [
        {"type": "conv", "out_channels": 4, "kernel": [3, 2], "stride": [1, 2], "padding": 1, "pool": {"kernel": 2}},
        {"type": "bconv", "out_channels": 3, "kernel": 3},
        {"type": "blinear", "out_features": 5},
        {"type": "exit", "classes": 3},
    ],
}


def test_shapes_follow_pytorch() -> None:
    cfg = copy.deepcopy(BASE)
    cfg["layers"][1]["padding"] = 1
    spec = parse_config(cfg)
    assert spec.layers[0].conv_shape == (4, 12, 5)  # (12+2-3)//1+1, (9+2-2)//2+1
    assert spec.layers[0].out_shape == (4, 6, 2)
    assert spec.layers[1].out_shape == (3, 6, 2)
    assert spec.layers[2].kernel == (6, 2) and spec.layers[2].out_shape == (5, 1, 1)
    assert spec.exit.fan_in == 5


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["layers"][1].update(type="dense"), "layers[1].type: unknown layer type 'dense'"),
        (lambda c: c["layers"][0].pop("kernel"), "layers[0]: missing field 'kernel'"),
        (lambda c: c["layers"][0].update(out_channels=0), "layers[0].out_channels must be >= 1"),
        (lambda c: c["layers"][0].update(stride=-1), "layers[0].stride must be >= 1"),
        (lambda c: c["layers"][0].update(kernel=40), "larger than its padded input"),
        (lambda c: c["layers"][0].update(pool={"kernel": 30}), "leaves no output"),
        (lambda c: c["layers"][0].update(pool={"kernel": 2, "padding": 2}), "at most half the pool kernel"),
        (
            lambda c: c["layers"].insert(0, {"type": "bconv", "out_channels": 2, "kernel": 1}),
            "first block must be 'conv'",
        ),
        (lambda c: c["layers"].append({"type": "blinear", "out_features": 2}), "'exit' must be the last block"),
        (lambda c: c["layers"].pop(), "the last block must be 'exit'"),
        (lambda c: c["layers"][1].update(type="conv"), "must be the first block"),
        (lambda c: c.update(name="my model"), "not a valid C identifier"),
        (lambda c: c.update(name="x*/ #include"), "not a valid C identifier"),
        (lambda c: c.update(name="int"), "not a valid C identifier"),
        (lambda c: c.update(input=[1, 12]), "config.input must be [C, H, W]"),
        (lambda c: c["layers"][0].update(colour="red"), "unknown field 'colour'"),
        (lambda c: c["layers"][0].update(out_channels=10**6), "larger than the supported maximum"),
        (lambda c: c.update(input=[1, 100000, 100000]), "larger than the supported maximum"),
        (lambda c: c["layers"][3].update(classes=1), "classes must be >= 2"),
        (lambda c: c["layers"][0].update(kernel=[1, 2, 3]), "list of 2 integers"),
        (lambda c: c["layers"][0].update(kernel=2.5), "must be an integer"),
    ],
)
def test_errors_name_the_field(mutate, message) -> None:
    cfg = copy.deepcopy(BASE)
    cfg["layers"][1]["padding"] = 1  # make the base valid
    parse_config(cfg)
    mutate(cfg)
    with pytest.raises(ConfigError) as info:
        parse_config(cfg)
    assert message in str(info.value)


def test_a_linear_block_on_an_input_wider_than_255_is_refused() -> None:
    """The C block table holds a linear block's kernel (its input's H x W) in bytes: 256 columns would wrap to 0."""
    base = {
        "name": "w",
        "input": [1, 43, 1024],
        "layers": [{"type": "conv", "out_channels": 2, "kernel": 4, "stride": 4}],
    }
    wide = {**base, "layers": [*base["layers"], {"type": "blinear", "out_features": 4}, {"type": "exit", "classes": 2}]}
    with pytest.raises(ConfigError, match=r"input is 10x256; a linear block takes at most 255"):
        parse_config(wide)
    narrow = copy.deepcopy(wide)
    narrow["input"] = [1, 43, 1020]  # 255 columns after the stride: the largest that fits a byte
    assert parse_config(narrow).layers[1].kernel == (10, 255)
