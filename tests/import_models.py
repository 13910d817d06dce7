"""Source models for the importer tests: small BNNs trained for a few seconds, then exported.

Each builder returns ``(onnx_path, input_scale, input_offset, x_uint8)``: the exported file,
how its float input relates to uint8 pixels, and real test images in ebnn-codegen's layout.
Two plain PyTorch BNNs (torch.onnx.export, two exporters and two sign patterns) and four
Brevitas models (QONNX): TFC-like, CNV-like with pool after sign, per-channel scaled weights
with negative batch-norm scales, and an 8-bit input quantizer on normalised input.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ebnn_codegen.data.mnist import load


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as uint8: train images, labels, and test images."""
    x, y = load("digits", "train")
    xt, _ = load("digits", "test")
    return x, y, xt


def train(model: nn.Module, x: torch.Tensor, y: np.ndarray, steps: int = 60, lr: float = 1e-2, seed: int = 0) -> None:
    """A few Adam steps (seconds): accuracy is not the point, exactness is."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: threads only contend
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    yt = torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()


# ------------------------------------------------------------------------------------------
# plain PyTorch BNNs
# ------------------------------------------------------------------------------------------


class WhereSign(torch.autograd.Function):
    """+1 where x > 0 else -1 (so sign(0) = -1); the exporter writes Where(Greater(x, 0), 1, -1)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class SteSign(torch.autograd.Function):
    """torch.sign forward (ONNX Sign), straight-through backward."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class BinConv(nn.Conv2d):
    """Real-valued shadow weights, Sign on them in the forward pass."""

    def forward(self, x):  # type: ignore[override]
        return self._conv_forward(x, SteSign.apply(self.weight), self.bias)


class BinLinear(nn.Linear):
    def forward(self, x):  # type: ignore[override]
        return nn.functional.linear(x, SteSign.apply(self.weight), self.bias)


class PlainWhere(nn.Module):
    """Sign node on real weights, BatchNormalization, Where/Greater activations, pool before sign."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = BinConv(1, 16, 3, bias=True), nn.BatchNorm2d(16)
        self.c2, self.b2 = BinConv(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.f1, self.b3 = BinLinear(32 * 3 * 3, 64, bias=True), nn.BatchNorm1d(64)
        self.f2, self.b4 = BinLinear(64, 10, bias=False), nn.BatchNorm1d(10)

    def forward(self, x):
        x = WhereSign.apply(nn.functional.max_pool2d(self.b1(self.c1(x)), 2))
        x = WhereSign.apply(self.b2(self.c2(x)))
        x = WhereSign.apply(self.b3(self.f1(torch.flatten(x, 1))))
        return self.b4(self.f2(x))


class PmSign(torch.autograd.Function):
    """±1 with sign(0) = +1, straight-through."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g


class PlainSign(nn.Module):
    """±1 weights (constant-folded by the exporter), Mul/Add affine instead of batch norm,
    torch.sign activations (ONNX Sign), max-pool after the sign."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(16, 1, 3, 3))
        self.w2 = nn.Parameter(torch.randn(32, 16, 3, 3))
        self.w3 = nn.Parameter(torch.randn(10, 32 * 2 * 2))
        self.s1, self.t1 = nn.Parameter(torch.full((1, 16, 1, 1), 0.02)), nn.Parameter(torch.randn(1, 16, 1, 1) * 0.3)
        self.s2, self.t2 = nn.Parameter(torch.full((1, 32, 1, 1), 0.1)), nn.Parameter(torch.randn(1, 32, 1, 1) * 0.3)
        self.s3, self.t3 = nn.Parameter(torch.full((10,), 0.1)), nn.Parameter(torch.zeros(10))

    def forward(self, x):
        x = nn.functional.conv2d(x, PmSign.apply(self.w1), padding=1) * self.s1 + self.t1
        x = nn.functional.max_pool2d(SteSign.apply(x), 2)
        x = nn.functional.conv2d(x, PmSign.apply(self.w2), padding=1) * self.s2 + self.t2
        x = nn.functional.max_pool2d(SteSign.apply(x), 2)
        return nn.functional.linear(torch.flatten(x, 1), PmSign.apply(self.w3)) * self.s3 + self.t3


def _export(model: nn.Module, example: torch.Tensor, path: Path, dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=dynamo, input_names=["x"], output_names=["scores"])


def plain_where(folder: Path) -> tuple[Path, float, float, np.ndarray]:
    """PlainWhere on x = pixel / 255, legacy TorchScript exporter."""
    x, y, xt = digits()
    torch.manual_seed(1)
    model = PlainWhere()
    train(model, torch.from_numpy(x).float() / 255, y)
    path = folder / "plain_where.onnx"
    _export(model, torch.zeros(1, 1, 8, 8), path, dynamo=False)
    return path, 1 / 255, 0.0, xt


def plain_sign(folder: Path) -> tuple[Path, float, float, np.ndarray]:
    """PlainSign on x = pixel / 256, the default (dynamo) exporter."""
    x, y, xt = digits()
    torch.manual_seed(2)
    model = PlainSign()
    train(model, torch.from_numpy(x).float() / 256, y)
    path = folder / "plain_sign.onnx"
    _export(model, torch.zeros(1, 1, 8, 8), path, dynamo=True)
    return path, 1 / 256, 0.0, xt


# ------------------------------------------------------------------------------------------
# Brevitas -> QONNX
# ------------------------------------------------------------------------------------------


def _brevitas():
    import brevitas.nn as qnn
    from brevitas.inject.enum import ScalingImplType, ScalingPerOutputType, StatsOp
    from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
    from brevitas.quant.fixed_point import Int8ActPerTensorFixedPointMinMaxInit

    class BinaryPerChannel(SignedBinaryWeightPerTensorConst):
        """Binary weights scaled by the mean |w| of each output channel (XNOR-Net style)."""

        scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS
        scaling_stats_op = StatsOp.AVE
        scaling_per_output_type = ScalingPerOutputType.CHANNEL

    class BinaryPerTensorScaled(SignedBinaryWeightPerTensorConst):
        scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS
        scaling_stats_op = StatsOp.AVE

    class Input8(Int8ActPerTensorFixedPointMinMaxInit):
        """Signed 8-bit input, scale 2^-7: x = (pixel - 128) / 128 lands on its grid."""

        min_val = -1.0
        max_val = 1.0 - 2.0**-7

    return (
        qnn,
        SignedBinaryWeightPerTensorConst,
        SignedBinaryActPerTensorConst,
        BinaryPerChannel,
        BinaryPerTensorScaled,
        Input8,
    )


def _qonnx_export(model: nn.Module, example: torch.Tensor, path: Path, dynamo: bool = False) -> None:
    """Brevitas's QONNX export (TorchScript path by default: seconds; the dynamo path is slower)."""
    from brevitas.export import export_qonnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, example, export_path=str(path), dynamo=dynamo)


def brevitas_tfc(folder: Path, hidden: int = 64, n_train: int = 2000) -> tuple[Path, float, float, np.ndarray]:
    """TFC-like MLP 784-64-64-64-10 (binary weights, bipolar activations, BN) on an MNIST subset."""
    qnn, wq, aq, *_ = _brevitas()

    class TFC(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            width = 784
            for _ in range(3):
                layers += [qnn.QuantLinear(width, hidden, bias=False, weight_quant=wq), nn.BatchNorm1d(hidden)]
                layers += [qnn.QuantIdentity(act_quant=aq)]
                width = hidden
            self.features = nn.Sequential(*layers)
            self.fc = qnn.QuantLinear(hidden, 10, bias=False, weight_quant=wq)
            self.bn = nn.BatchNorm1d(10)

        def forward(self, x):
            return self.bn(self.fc(self.features(x.view(x.shape[0], -1))))

    x, y = load("mnist", "train", n=n_train)
    xt, _ = load("mnist", "test", n=256)
    torch.manual_seed(3)
    model = TFC()
    train(model, torch.from_numpy(x).float() / 255, y, steps=40)
    path = folder / "brevitas_tfc.onnx"
    _qonnx_export(model, torch.zeros(1, 1, 28, 28), path)
    return path, 1 / 255, 0.0, xt


def brevitas_cnv(folder: Path) -> tuple[Path, float, float, np.ndarray]:
    """CNV-like (conv-conv-pool twice, FC-FC-exit; small widths), max-pool after the bipolar activation."""
    qnn, wq, aq, *_ = _brevitas()

    def block(cin: int, cout: int, pad: int) -> list[nn.Module]:
        return [qnn.QuantConv2d(cin, cout, 3, padding=pad, bias=False, weight_quant=wq), nn.BatchNorm2d(cout),
                qnn.QuantIdentity(act_quant=aq)]  # fmt: skip

    class CNV(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                *block(1, 16, 0), *block(16, 16, 0), nn.MaxPool2d(2),
                *block(16, 32, 1), *block(32, 32, 1), nn.MaxPool2d(2),
            )  # fmt: skip
            self.classifier = nn.Sequential(
                qnn.QuantLinear(32, 64, bias=False, weight_quant=wq), nn.BatchNorm1d(64), qnn.QuantIdentity(act_quant=aq),
                qnn.QuantLinear(64, 64, bias=False, weight_quant=wq), nn.BatchNorm1d(64), qnn.QuantIdentity(act_quant=aq),
                qnn.QuantLinear(64, 10, bias=False, weight_quant=wq), nn.BatchNorm1d(10),
            )  # fmt: skip

        def forward(self, x):
            return self.classifier(self.features(x).view(x.shape[0], -1))

    x, y, xt = digits()
    torch.manual_seed(4)
    model = CNV()
    train(model, torch.from_numpy(x).float() / 255, y, steps=40)
    path = folder / "brevitas_cnv.onnx"
    _qonnx_export(model, torch.zeros(1, 1, 8, 8), path)
    return path, 1 / 255, 0.0, xt


def brevitas_scaled(folder: Path) -> tuple[Path, float, float, np.ndarray]:
    """Per-channel (and per-tensor) scaled binary weights, conv bias, batch norms forced to negative
    scales on half of their channels; pool before the activation in block 0, after it in block 1."""
    qnn, _, aq, per_channel, per_tensor, _ = _brevitas()

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.b1 = (
                qnn.QuantConv2d(1, 16, 3, padding=1, bias=True, weight_quant=per_channel),
                nn.BatchNorm2d(16),
            )
            self.a1, self.p1 = qnn.QuantIdentity(act_quant=aq), nn.MaxPool2d(2)
            self.c2, self.b2 = (
                qnn.QuantConv2d(16, 24, 3, padding=1, bias=True, weight_quant=per_tensor),
                nn.BatchNorm2d(24),
            )
            self.a2, self.p2 = qnn.QuantIdentity(act_quant=aq), nn.MaxPool2d(2)
            self.f1, self.b3 = qnn.QuantLinear(96, 32, bias=True, weight_quant=per_channel), nn.BatchNorm1d(32)
            self.a3 = qnn.QuantIdentity(act_quant=aq)
            self.f2 = qnn.QuantLinear(32, 10, bias=True, weight_quant=per_channel)

        def forward(self, x):
            x = self.a1(self.b1(self.p1(self.c1(x))))  # pool before the activation
            x = self.p2(self.a2(self.b2(self.c2(x))))  # pool after it
            x = self.a3(self.b3(self.f1(x.view(x.shape[0], -1))))
            return self.f2(x)

    x, y, xt = digits()
    torch.manual_seed(5)
    model = Scaled()
    train(model, torch.from_numpy(x).float() / 255, y, steps=40)
    with torch.no_grad():
        for bn in (model.b1, model.b2, model.b3):
            bn.weight[1::2] = -bn.weight[1::2].abs()  # decreasing channels: LE thresholds, min-pooling
    path = folder / "brevitas_scaled.onnx"
    _qonnx_export(model, torch.zeros(1, 1, 8, 8), path)
    return path, 1 / 255, 0.0, xt


def brevitas_input8(folder: Path) -> tuple[Path, float, float, np.ndarray]:
    """An 8-bit input quantizer (scale 2^-7) on x = (pixel - 128) / 128, then W1A1 blocks
    (exported by the dynamo path; the other Brevitas models by the TorchScript path)."""
    qnn, wq, aq, _, _, input8 = _brevitas()

    class In8(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = qnn.QuantIdentity(act_quant=input8)
            self.c1, self.b1 = qnn.QuantConv2d(1, 16, 3, bias=False, weight_quant=wq), nn.BatchNorm2d(16)
            self.a1 = qnn.QuantIdentity(act_quant=aq)
            self.c2, self.b2 = qnn.QuantConv2d(16, 16, 3, bias=False, weight_quant=wq), nn.BatchNorm2d(16)
            self.a2, self.p = qnn.QuantIdentity(act_quant=aq), nn.MaxPool2d(2)
            self.f, self.b3 = qnn.QuantLinear(64, 10, bias=False, weight_quant=wq), nn.BatchNorm1d(10)

        def forward(self, x):
            x = self.a1(self.b1(self.c1(self.q(x))))
            x = self.p(self.a2(self.b2(self.c2(x))))
            return self.b3(self.f(x.view(x.shape[0], -1)))

    x, y, xt = digits()
    torch.manual_seed(6)
    model = In8()
    train(model, (torch.from_numpy(x).float() - 128) / 128, y, steps=40)
    path = folder / "brevitas_input8.onnx"
    _qonnx_export(model, torch.zeros(1, 1, 8, 8), path, dynamo=True)  # Brevitas's default with torch >= 2.9
    return path, 1 / 128, -1.0, xt


BUILDERS = {
    "plain_where": plain_where,
    "plain_sign": plain_sign,
    "brevitas_tfc": brevitas_tfc,
    "brevitas_cnv": brevitas_cnv,
    "brevitas_scaled": brevitas_scaled,
    "brevitas_input8": brevitas_input8,
}
