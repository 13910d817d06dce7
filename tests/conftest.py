"""Shared fixtures.

Tool gating: a test that needs a toolchain or emulator calls
``require_tools(...)``.  When a tool is missing it *fails* if ``CI=true`` (or
``EBNN_REQUIRE_TOOLS=1``) and otherwise skips with a message naming the
Debian package to install.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

import ebnn_codegen as E

os.environ.setdefault("NO_COLOR", "1")
os.environ.setdefault("COLUMNS", "120")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def strict_tools() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("EBNN_REQUIRE_TOOLS") == "1"


def require_tools(*tools: str, package: str) -> None:
    """Fail (CI) or skip (elsewhere) unless every tool is on PATH (or is an existing path)."""
    missing = [t for t in tools if shutil.which(t) is None and not os.path.exists(t)]
    if missing:
        msg = f"missing {', '.join(missing)}: install the Debian package(s) {package}"
        if strict_tools():
            pytest.fail(msg + " (CI=true: tests needing tools must not skip)")
        pytest.skip(msg)


def randomize_bn(model: torch.nn.Module, seed: int = 0, extreme: bool = False) -> torch.nn.Module:
    """Random batch-norm statistics, including γ < 0, γ = 0, tiny variance and large means."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            gamma = torch.randn(n, generator=g)
            if extreme and n > 2:
                gamma[0] = 0.0
                gamma[1] = -abs(gamma[1]) - 0.1
            m.weight.data = gamma
            m.bias.data = torch.randn(n, generator=g) * 2
            scale = float(getattr(m, "_acc_scale", 1.0))
            m.running_mean.data = torch.randn(n, generator=g) * scale
            var = torch.rand(n, generator=g) * scale * scale + 1e-3
            if extreme and n > 3:
                var[3] = 1e-9
            m.running_var.data = var
    return model.eval()


def random_model(config: dict, seed: int = 0, extreme: bool = False) -> torch.nn.Module:
    """A model with random weights and batch-norm statistics scaled to each block's accumulator range."""
    torch.manual_seed(seed)
    model = E.build(config)
    for block in [*model.blocks, model.exit]:
        spec = block.spec
        fan = spec.fan_in
        scale = (fan * 127.0) ** 0.5 * 8 if spec.type == "conv" else fan**0.5
        block.bn._acc_scale = scale  # type: ignore[attr-defined]
    return randomize_bn(model, seed, extreme)


@pytest.fixture
def tiny_config() -> dict:
    return {
        "name": "tiny",
        "input": [1, 9, 7],
        "layers": [
            {
                "type": "conv",
                "out_channels": 5,
                "kernel": [3, 2],
                "padding": [1, 1],
                "pool": {"kernel": 3, "stride": 2, "padding": 1},
            },
            {"type": "bconv", "out_channels": 11, "kernel": 3, "padding": 1},
            {"type": "blinear", "out_features": 13},
            {"type": "exit", "classes": 4},
        ],
    }


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_config(rng: np.random.Generator, name: str = "rnd", max_channels: int = 40) -> dict:
    """A random valid config: odd and non-square sizes, stride, padding, pooling with padding,
    1..max_channels channels, 0-2 bconv and 0-2 blinear blocks."""
    from ebnn_codegen.config import parse_config
    from ebnn_codegen.errors import ConfigError

    def conv_entry(kind: str, h: int, w: int) -> dict:
        kh, kw = int(rng.integers(1, min(5, h + 2) + 1)), int(rng.integers(1, min(5, w + 2) + 1))
        entry: dict = {
            "type": kind,
            "out_channels": int(rng.choice([1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 24, 31, 33, max_channels])),
            "kernel": [kh, kw] if rng.random() < 0.6 else kh,
        }
        if rng.random() < 0.5:
            entry["stride"] = [int(rng.integers(1, 3)), int(rng.integers(1, 4))]
        if rng.random() < 0.6:
            entry["padding"] = [int(rng.integers(0, kh)), int(rng.integers(0, kw))]
        if rng.random() < 0.6:
            pk = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
            entry["pool"] = {
                "kernel": pk,
                "stride": [int(rng.integers(1, 4)), int(rng.integers(1, 3))],
                "padding": [int(rng.integers(0, pk[0] // 2 + 1)), int(rng.integers(0, pk[1] // 2 + 1))],
            }
        return entry

    for _ in range(1000):
        c = int(rng.integers(1, 4))
        h, w = int(rng.integers(3, 20)), int(rng.integers(3, 20))
        layers = [conv_entry("conv", h, w)]
        for _ in range(int(rng.integers(0, 3))):
            layers.append(conv_entry("bconv", 6, 6))
        for _ in range(int(rng.integers(0, 3))):
            layers.append({"type": "blinear", "out_features": int(rng.integers(1, max_channels + 1))})
        layers.append({"type": "exit", "classes": int(rng.integers(2, 11))})
        cfg = {"name": name, "input": [c, h, w], "layers": layers}
        try:
            parse_config(cfg)
        except ConfigError:
            continue
        return cfg
    raise RuntimeError("no valid random config found")
