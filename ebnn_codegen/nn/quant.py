"""Binarisation: sign with sign(0) = +1 and a straight-through gradient.

``sign(x) = +1 if x >= 0 else -1``.  Training uses the straight-through
estimator of Courbariaux et al. (BinaryNet, 2016) and Hubara et al.:
the gradient passes unchanged where ``|x| <= 1`` and is zero elsewhere.

>>> import torch
>>> x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
>>> y = ste_sign(x); y.tolist()
[-1.0, -1.0, 1.0, 1.0, 1.0]
>>> y.sum().backward(); x.grad.tolist()
[0.0, 1.0, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Quantizer = Callable[[torch.Tensor], torch.Tensor]
"""A quantizer: a callable from tensor to tensor (a module such as :class:`SteSign`, or a function)."""


def sign(x: torch.Tensor) -> torch.Tensor:
    """Sign with sign(0) = +1 (torch.sign maps 0 to 0, which is not a binary value)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SteSign(torch.autograd.Function):
    # ``ctx`` is torch's dynamic context object (``saved_tensors`` is not in its stubs): Any.
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        saved: tuple[torch.Tensor, ...] = ctx.saved_tensors
        (x,) = saved
        return grad * (x.abs() <= 1).to(grad.dtype)


def ste_sign(x: torch.Tensor) -> torch.Tensor:
    """Sign forward (sign(0) = +1), straight-through gradient where ``|x| <= 1``."""
    y: torch.Tensor = _SteSign.apply(x)  # type: ignore[no-untyped-call]  # torch's Function.apply is unannotated
    return y


class SteSign(torch.nn.Module):
    """Module form of :func:`ste_sign`, usable as a quantizer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_sign(x)


def get_quantizer(spec: str | Quantizer | None) -> Quantizer | None:
    """Resolve a quantizer given as ``None`` (identity), ``"ste_sign"`` or a callable."""
    if spec is None:
        return None
    if spec == "ste_sign":
        return SteSign()
    if callable(spec):
        return spec
    raise ValueError(f"unknown quantizer {spec!r} (use None, 'ste_sign' or a callable)")
