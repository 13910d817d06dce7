"""An eBNN device section: the hidden blocks in ``blocks`` and the ``exit`` block."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ModelSpec, parse_config
from .blocks import make_block


class DeviceSection(nn.Module):
    """A binarized device section built from a config (see :mod:`ebnn_codegen.config`).

    ``forward(x)`` takes float pixel values 0..255, N×C×H×W, and returns float
    class scores N×K.  ``blocks[i]`` is hidden block ``i``; in eval mode each
    outputs a ±1 float tensor.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.spec: ModelSpec = parse_config(config)
        self.config = dict(config)
        self.blocks = nn.ModuleList(make_block(s) for s in self.spec.hidden)
        self.exit = make_block(self.spec.exit)

    @property
    def name(self) -> str:
        return self.spec.name

    def features(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Outputs of hidden blocks 0..upto (all by default)."""
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            outs.append(x)
            if upto is not None and i == upto:
                break
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        scores: torch.Tensor = self.exit(x)
        return scores

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Scores and the output of every hidden block, in one pass."""
        outs = self.features(x)
        return self.exit(outs[-1] if outs else x), outs
