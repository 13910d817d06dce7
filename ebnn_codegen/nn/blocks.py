"""Binarized layers and the fused eBNN blocks.

:class:`QuantConv2d` and :class:`QuantLinear` subclass the stock layers and add
only an ``input_quantizer`` and a ``kernel_quantizer``; with both ``None`` they
are exactly ``nn.Conv2d``/``nn.Linear``.  The kernel quantizer binarises the
real-valued shadow weights in the forward pass (the optimiser updates the
shadow weights; :func:`clip_weights` keeps them in [-1, 1]).

A hidden block computes, in this order (eBNN's order, which the device code
reproduces exactly)::

    conv or linear (binary weights, no bias) -> max-pool (optional, -inf padding)
        -> BatchNorm -> sign (sign(0) = +1)

or, with ``pool.after_sign``, ``conv -> BatchNorm -> sign -> max-pool``.

A block whose spec says ``threshold`` (imported models) replaces BatchNorm + sign
by :class:`ThresholdSign`: one integer threshold and direction per channel on the
(pooled) integer accumulator; it is exact by construction and not trainable.

The exit block is ``binary linear -> BatchNorm1d`` and returns class scores.
No code generation lives here: the compiler reads these modules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import LayerSpec
from .quant import Quantizer, get_quantizer, sign, ste_sign


class QuantConv2d(nn.Conv2d):
    def __init__(
        self,
        *args: Any,
        input_quantizer: str | Quantizer | None = None,
        kernel_quantizer: str | Quantizer | None = "ste_sign",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.input_quantizer = get_quantizer(input_quantizer)
        self.kernel_quantizer = get_quantizer(kernel_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w = self.weight if self.kernel_quantizer is None else self.kernel_quantizer(self.weight)
        y: torch.Tensor = self._conv_forward(x, w, self.bias)  # torch leaves its return type out
        return y


class QuantLinear(nn.Linear):
    def __init__(
        self,
        *args: Any,
        input_quantizer: str | Quantizer | None = None,
        kernel_quantizer: str | Quantizer | None = "ste_sign",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.input_quantizer = get_quantizer(input_quantizer)
        self.kernel_quantizer = get_quantizer(kernel_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w = self.weight if self.kernel_quantizer is None else self.kernel_quantizer(self.weight)
        return nn.functional.linear(x, w, self.bias)


def binary_weight(module: QuantConv2d | QuantLinear) -> torch.Tensor:
    """The ±1 weights a block uses in its forward pass (sign(0) = +1)."""
    return sign(module.weight.detach())


class ThresholdSign(nn.Module):
    """+1 where ``acc >= threshold`` (direction +1) or ``acc <= threshold`` (direction -1), else -1.

    ``acc`` is the integer accumulator held in float32 (exact below 2^24, which the
    config's fan-in limits guarantee).  Buffers: ``threshold`` int32 and ``direction``
    int8 (+1/-1), one per channel.
    """

    threshold: torch.Tensor
    direction: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.zeros(channels, dtype=torch.int32))
        self.register_buffer("direction", torch.ones(channels, dtype=torch.int8))

    def forward(self, acc: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        t = self.threshold.to(acc.dtype).view(shape)
        up = (self.direction > 0).view(shape)
        on = torch.where(up, acc >= t, acc <= t)
        return torch.where(on, torch.ones_like(acc), -torch.ones_like(acc))


class ConvBlock(nn.Module):
    """conv (binary weights) -> max-pool -> BatchNorm2d -> sign.

    The first block (``spec.type == "conv"``) takes float pixel values 0..255;
    a ``bconv`` block takes ±1 activations, and a zero-padded tap contributes 0.
    """

    act: ThresholdSign  # only with ``spec.threshold``
    bn: nn.BatchNorm2d  # only without ``spec.threshold``

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.conv = QuantConv2d(
            spec.in_shape[0], spec.out_channels, spec.kernel, stride=spec.stride, padding=spec.padding, bias=False
        )
        self.pool = (
            nn.MaxPool2d(spec.pool.kernel, spec.pool.stride, spec.pool.padding) if spec.pool is not None else None
        )
        if spec.threshold:
            self.act = ThresholdSign(spec.out_channels)
        else:
            self.bn = nn.BatchNorm2d(spec.out_channels)

    @property
    def pool_after_sign(self) -> bool:
        return self.spec.pool is not None and self.spec.pool.after_sign

    def accumulator(self, x: torch.Tensor) -> torch.Tensor:
        """The integer accumulator (pooled unless the pool comes after the sign), as float."""
        y: torch.Tensor = self.conv(x)
        if self.pool is not None and not self.pool_after_sign:
            y = self.pool(y)
        return y

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The batch-norm output before sign (what the straight-through gradient sees)."""
        if self.spec.threshold:
            raise TypeError("a threshold block has no batch norm (it is not trainable)")
        y: torch.Tensor = self.bn(self.accumulator(x))
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.accumulator(x)) if self.spec.threshold else ste_sign(self.pre_activation(x))
        if self.pool is not None and self.pool_after_sign:
            y = self.pool(y)  # on ±1 values: an OR
        return y


class LinearBlock(nn.Module):
    """binary linear -> BatchNorm1d -> sign, on the flattened (C, H, W) input (an imported
    block with ``spec.threshold``: binary linear -> integer threshold, no batch norm)."""

    act: ThresholdSign  # only when thresholded
    bn: nn.BatchNorm1d  # only when not thresholded

    def __init__(self, spec: LayerSpec, threshold: bool | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.linear = QuantLinear(spec.fan_in, spec.out_channels, bias=False)
        self.thresholded = spec.threshold if threshold is None else threshold
        if self.thresholded:
            self.act = ThresholdSign(spec.out_channels)
        else:
            self.bn = nn.BatchNorm1d(spec.out_channels)

    def accumulator(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.linear(torch.flatten(x, 1))
        return y

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.thresholded:
            raise TypeError("a threshold block has no batch norm (it is not trainable)")
        y: torch.Tensor = self.bn(self.accumulator(x))
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.thresholded:
            y: torch.Tensor = self.act(self.accumulator(x))
            return y
        return ste_sign(self.pre_activation(x))


class ExitBlock(LinearBlock):
    """The exit: a :class:`LinearBlock` whose batch-normalised accumulators are the float class
    scores (no sign)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec, threshold=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_activation(x)


def make_block(spec: LayerSpec) -> nn.Module:
    if spec.type in ("conv", "bconv"):
        return ConvBlock(spec)
    if spec.type == "blinear":
        return LinearBlock(spec)
    return ExitBlock(spec)


@torch.no_grad()
def clip_weights(model: nn.Module, bound: float = 1.0) -> None:
    """Clip every binarised layer's real-valued shadow weights to [-bound, bound]."""
    for m in model.modules():
        if isinstance(m, (QuantConv2d, QuantLinear)) and m.kernel_quantizer is not None:
            m.weight.clamp_(-bound, bound)
