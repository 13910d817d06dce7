"""The exit rule and the local aggregator as the gateway computes it.

**Exit rule** (DDNN paper, eq. 1): with ``p = softmax(z)`` over the ``|C|``
aggregated scores ``z``, the normalised entropy is

    η(p) = -Σ_i p_i log p_i / log |C|    ∈ [0, 1]

(0 for a one-hot ``p``, 1 for the uniform one); a sample exits at the first
exit whose ``η < T`` for that exit's threshold ``T``; the last exit always
classifies.  ``T = 0`` therefore never exits early, ``T`` just above 1 always.

**Local aggregator on the gateway** (:class:`LocalGateway`): it receives each
device's scores as the integers ``q = round(score * 2**m)`` of the messages
and aggregates them in integers: MP takes the element-wise maximum of the
present devices' ``q``, AP their sum (the mean is the sum over the count
times ``2**-m``), CC the dot product of the concatenated ``q`` (missing
devices as 0) with the ±1 weights of its binary linear layer.  The aggregated
scores in real units are then ``max_q * 2**-m``, ``sum_q * 2**-m / count`` or
``a * acc + b`` (the CC batch norm folded to ``a = γ/sqrt(var+eps) * 2**-m``,
``b = β - mean * γ/sqrt(var+eps)``).  The argmax (ties to the lowest index)
is the local prediction; the gateway's C computes the same integers and uses
float only for the real-unit scores of AP/CC and for η.
"""

from __future__ import annotations

import numpy as np
import torch

from ..nn.blocks import binary_weight
from .model import DDNN


def normalized_entropy(scores: np.ndarray) -> np.ndarray:
    """η of softmax(scores) along the last axis, in float64; (..., K) -> (...)."""
    z = np.asarray(scores, np.float64)
    k = z.shape[-1]
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=-1, keepdims=True)
    p = e / s
    # -Σ p log p = log s - Σ p z  (z shifted so max = 0), stable for any range
    h = np.log(s[..., 0]) - np.sum(p * z, axis=-1)
    return np.clip(h / np.log(k), 0.0, 1.0)


def exits(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The exit decision: η(softmax(scores)) < threshold."""
    return normalized_entropy(scores) < float(threshold)


def argmax_first(z: np.ndarray) -> np.ndarray:
    """argmax along the last axis, ties to the lowest index (as torch.argmax and the C)."""
    return np.asarray(z).argmax(axis=-1).astype(np.int64)


class LocalGateway:
    """The local aggregator over message integers, as the gateway MCU runs it."""

    def __init__(self, model: DDNN) -> None:
        self.kind = model.spec.local_aggregator
        self.frac_bits = model.calibration.frac_bits()
        self.devices = model.num_devices
        self.classes = model.num_classes
        self.weights: np.ndarray | None = None
        if self.kind == "concat":
            lin, bn = model.local.linear, model.local.bn
            # (K, D*K) ±1, input index d*K + k as in torch's concat of (N, D, K)
            self.weights = binary_weight(lin).numpy().astype(np.int64)
            assert bn.running_var is not None and bn.running_mean is not None
            with torch.no_grad():
                a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).double().numpy()
                b = (bn.bias.double() - bn.running_mean.double() * torch.from_numpy(a)).numpy()
            self.a = a * 2.0**-self.frac_bits
            self.b = b

    def integers(self, q: np.ndarray, present: np.ndarray) -> np.ndarray:
        """The integer aggregate (N, K): MP max, AP sum, CC dot product (int64)."""
        q = np.asarray(q, np.int64)
        pm = np.asarray(present, bool)[:, :, None]
        if self.kind == "max":
            big = np.iinfo(np.int64).min
            out = np.where(pm, q, big).max(axis=1)
            return np.where(pm.any(axis=1), out, 0)
        if self.kind == "avg":
            return np.where(pm, q, 0).sum(axis=1)
        assert self.weights is not None
        flat = np.where(pm, q, 0).reshape(len(q), -1)
        return flat @ self.weights.T

    def scores(self, q: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(real-unit local scores (N, K) float64, prediction (N,)) from message integers."""
        acc = self.integers(q, present)
        if self.kind == "max":
            z = acc * 2.0**-self.frac_bits
            pred = argmax_first(acc)
        elif self.kind == "avg":
            count = np.maximum(np.asarray(present, bool).sum(axis=1), 1)[:, None]
            z = acc * 2.0**-self.frac_bits / count
            pred = argmax_first(acc)
        else:
            z = acc * self.a[None] + self.b[None]
            pred = argmax_first(z)
        return z, pred
