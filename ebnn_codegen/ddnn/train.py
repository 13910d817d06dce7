"""Joint training of a DDNN, then the calibration of what it sends.

The loss is the weighted sum of the cross-entropy of every exit (paper,
section IV-C)::

    L = w_device * sum_d CE(device_d, y_view_d) + w_local * CE(local, y)
        + w_edge * CE(edge, y) + w_cloud * CE(cloud, y)

Each device is trained on its own per-view label; a view whose label is not a
class (``3`` = absent in the MVMC layout) is left out of that device's mean.
*Device dropout*: every sample drops each device with probability
``training.device_dropout`` (at least one device stays; the devices of
``training.absent_devices`` are always dropped); a dropped device is
left out of the local MP/AP aggregators and sends zeros to CC, so the upper
tiers learn to classify with a device missing, which is what a failed device
looks like at inference.

``training.shift`` > 0 translates the training views at random
(:func:`shift_views`).  With ``training.recalibrate_bn`` the batch norms'
running statistics are re-estimated over the whole training set after the
last epoch (:func:`recalibrate_batch_norm`).

Binarised shadow weights are clipped to [-1, 1] after every step (BinaryNet).
Optimiser: Adam with a cosine learning-rate decay to zero.

After training, :func:`calibrate_messages` fixes the score fixed-point
position of the messages and :func:`choose_thresholds` picks the exit
threshold on the held-out validation part of the training split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import progress
from ..nn.blocks import clip_weights
from .datasets import MultiView
from .model import DDNN

Log = Callable[[str], None]

# Candidate exit thresholds: fine steps at the low end, where a model with many
# classes and confident exits puts most of its samples.
THRESHOLD_GRID = tuple(
    float(t) for t in np.round(np.concatenate([np.arange(0.01, 0.1, 0.01), np.arange(0.1, 1.0001, 0.05)]), 2)
)


def device_dropout_mask(
    n: int, devices: int, p: float, generator: torch.Generator, absent: tuple[int, ...] = ()
) -> torch.Tensor:
    """(n, devices) bool: each device kept with probability 1 - p, at least one kept per sample.

    Devices in ``absent`` are never kept (``training.absent_devices``); the
    random draws are the same with or without them.
    """
    keep = torch.rand(n, devices, generator=generator) >= p
    allowed = torch.ones(devices, dtype=torch.bool)
    if absent:
        allowed[list(absent)] = False
        keep &= allowed
    none = ~keep.any(dim=1)
    if none.any():
        choices = allowed.nonzero(as_tuple=True)[0]
        pick = choices[torch.randint(0, len(choices), (int(none.sum()),), generator=generator)]
        keep[none.nonzero(as_tuple=True)[0], pick] = True
    return keep


def shift_views(
    x: torch.Tensor, shift: int, generator: torch.Generator, tiles: tuple[int, int] | None = None
) -> torch.Tensor:
    """Translate every sample's views (N, D, C, H, W) by one random (dy, dx) in [-shift, shift]², zero fill.

    With ``tiles = (rows, cols)`` the D views are the row-major tiles of one
    image: it is reassembled, shifted as a whole and cut again, so content
    moves across tile borders.
    """
    if shift <= 0:
        return x
    n, d, c, h, w = x.shape
    if tiles is not None:
        rows, cols = tiles
        img = x.view(n, rows, cols, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n, 1, c, rows * h, cols * w)
        out = shift_views(img, shift, generator)
        return out.view(n, c, rows, h, cols, w).permute(0, 2, 4, 1, 3, 5).reshape(n, d, c, h, w)
    off = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator)
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    out = torch.empty_like(x)
    for dy in range(2 * shift + 1):
        for dx in range(2 * shift + 1):
            sel = ((off[:, 0] == dy) & (off[:, 1] == dx)).nonzero(as_tuple=True)[0]
            if len(sel):
                out[sel] = padded[sel, :, :, dy : dy + h, dx : dx + w]
    return out


def joint_loss(
    out: dict[str, torch.Tensor], y: torch.Tensor, y_views: torch.Tensor, weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of every exit's cross-entropy; absent views are ignored per device."""
    k = out["local"].shape[1]
    dev = out["device"]  # (N, D, K)
    parts: dict[str, torch.Tensor] = {}
    valid = (y_views >= 0) & (y_views < k)
    dev_loss = dev.new_zeros(())
    for d in range(dev.shape[1]):
        v = valid[:, d]
        if v.any():
            dev_loss = dev_loss + F.cross_entropy(dev[v, d], y_views[v, d])
    parts["device"] = dev_loss
    for name in ("local", "edge", "cloud"):
        if name in out:
            parts[name] = F.cross_entropy(out[name], y)
    total = sum(weights.get(name, 1.0) * v for name, v in parts.items())
    assert isinstance(total, torch.Tensor)
    return total, {name: float(v.detach()) for name, v in parts.items()}


@torch.no_grad()
def predict(model: DDNN, data: MultiView, batch: int = 512, present: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Float scores of every exit in eval mode (no message quantisation), on the model's torch device."""
    model.eval()
    where = next(model.parameters()).device
    outs: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(data), batch):
        x = torch.from_numpy(data.x[i : i + batch]).float().to(where)
        p = None if present is None else torch.from_numpy(present[i : i + batch]).to(where)
        o = model(x, p)
        for k, v in o.items():
            outs.setdefault(k, []).append(v.cpu().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def split_validation(data: MultiView, fraction: float) -> tuple[MultiView, MultiView | None]:
    """The last ``fraction`` of the training split is held out (the loaders already shuffle or are i.i.d.)."""
    n_val = int(round(len(data) * fraction))
    if n_val < 1 or n_val >= len(data):
        return data, None
    return data.subset(slice(0, len(data) - n_val)), data.subset(slice(len(data) - n_val, None))


def exit_accuracies(scores: dict[str, np.ndarray], data: MultiView) -> dict[str, float]:
    acc = {k: float(np.mean(v.argmax(1) == data.y)) for k, v in scores.items() if k != "device"}
    dev = scores["device"].argmax(2)
    acc["device_mean"] = float(np.mean(dev == data.y[:, None]))
    return acc


def train(
    model: DDNN,
    data: MultiView,
    *,
    val: MultiView | None = None,
    epochs: int | None = None,
    log: Log | None = None,
    limit_batches: int | None = None,
    device: str | torch.device = "cpu",
) -> History:
    """Train ``model`` jointly on ``data`` with the settings of its config's ``training`` section.

    ``device`` is the torch device to train on (``cpu``, ``cuda``); the random
    draws (order, shifts, dropout) come from a CPU generator, so they do not
    depend on it.  The model is left on the CPU, in eval mode.
    """
    tr = model.config["training"]
    where = torch.device(device)
    epochs = tr["epochs"] if epochs is None else epochs
    bs = int(tr["batch_size"])
    gen = torch.Generator().manual_seed(int(tr["seed"]))
    torch.manual_seed(int(tr["seed"]))
    model.to(where)
    opt = torch.optim.Adam(model.parameters(), lr=float(tr["lr"]), weight_decay=float(tr["weight_decay"]))
    steps_per_epoch = math.ceil(len(data) / bs)
    if limit_batches is not None:
        steps_per_epoch = min(steps_per_epoch, limit_batches)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    weights = {k: float(v) for k, v in model.config["loss_weights"].items()}
    p_drop = float(tr["device_dropout"])
    absent = tuple(tr["absent_devices"])
    shift = int(tr["shift"])
    tiles = tuple(tr["tiles"]) if tr["tiles"] is not None else None
    hist = History()
    t_start = time.perf_counter()
    y_all = torch.from_numpy(data.y)
    yv_all = torch.from_numpy(data.y_views)
    for epoch in progress.iterate(range(epochs), desc="train", unit="epoch"):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(data), generator=gen)
        sums: dict[str, float] = {}
        seen = 0
        for step in range(steps_per_epoch):
            idx = order[step * bs : (step + 1) * bs]
            if len(idx) < 2:
                continue
            ii = idx.numpy()
            x = shift_views(torch.from_numpy(data.x[ii]).float(), shift, gen, tiles)  # type: ignore[arg-type]
            present = device_dropout_mask(len(idx), model.num_devices, p_drop, gen, absent)
            out = model(x.to(where), present.to(where))
            loss, parts = joint_loss(out, y_all[idx].to(where), yv_all[idx].to(where), weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            clip_weights(model)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            sums["total"] = sums.get("total", 0.0) + float(loss.detach()) * len(idx)
            seen += len(idx)
        entry: dict[str, Any] = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0}
        entry["loss"] = {k: v / max(seen, 1) for k, v in sums.items()}
        if val is not None:
            entry["val_accuracy"] = exit_accuracies(predict(model, val), val)
        hist.epochs.append(entry)
        if log:
            msg = f"[epoch {epoch + 1}/{epochs}] {entry['seconds']:.1f}s loss {entry['loss'].get('total', 0):.3f}"
            if "val_accuracy" in entry:
                msg += " | val " + " ".join(f"{k} {v:.4f}" for k, v in entry["val_accuracy"].items())
            log(msg)
    if tr["recalibrate_bn"] and epochs > 0:
        t0 = time.perf_counter()
        count = recalibrate_batch_norm(model, data, device_dropout=p_drop, seed=int(tr["seed"]), absent=absent)
        if log:
            log(
                f"[batch norm] {count} running statistics re-estimated on {len(data)} samples in {time.perf_counter() - t0:.1f}s"
            )
    hist.seconds = time.perf_counter() - t_start
    model.to("cpu")
    model.eval()
    return hist


@torch.no_grad()
def recalibrate_batch_norm(
    model: DDNN,
    data: MultiView,
    *,
    device_dropout: float,
    seed: int = 0,
    batch: int = 512,
    absent: tuple[int, ...] = (),
) -> int:
    """Re-estimate every batch norm's running statistics over all of ``data``.

    During training the running mean and variance are exponential averages of
    the last few batches, each with its own random set of dropped devices: a
    noisy estimate, and every sign after a batch norm turns into a threshold,
    so the noise shows as held-out accuracy that jumps from epoch to epoch even
    at a small learning rate.  This pass sets them to the average of the
    per-batch statistics over every batch of ``data`` (``momentum = None``; one
    batch gives the exact mean and unbiased variance), on the samples as they
    are (no shifts: the inputs met at inference), with devices dropped as in
    training (probability ``device_dropout``; 0 measures the all-devices case).
    Weights are not changed.  Returns the number of batch norms updated.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(data) < 2:
        return 0
    saved = [m.momentum for m in norms]
    gen = torch.Generator().manual_seed(seed)
    where = next(model.parameters()).device
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for i in range(0, len(data), batch):
            x = torch.from_numpy(data.x[i : i + batch]).float()
            if len(x) < 2:
                continue
            present = device_dropout_mask(len(x), model.num_devices, device_dropout, gen, absent)
            model(x.to(where), present.to(where))
    finally:
        for m, mom in zip(norms, saved, strict=True):
            m.momentum = mom
        model.eval()
    return len(norms)


def calibrate_messages(model: DDNN, data: MultiView, quantile: float = 0.999) -> int:
    """Choose ``messages.score_frac_bits``: the finest scale at which the ``quantile``
    of |device score| (over every device) still fits the message integer range.

    Gives the model a new calibration (``model.calibration``, kept by the checkpoint) and returns m.
    """
    scores = predict(model, data)["device"]
    bits = int(model.config["messages"]["score_bits"])
    qmax = 2 ** (bits - 1) - 1
    a = float(np.quantile(np.abs(scores), quantile)) if scores.size else 1.0
    a = max(a, 1e-6)
    m = int(math.floor(math.log2(qmax / a)))
    m = max(-16, min(24, m))
    model.calibration = model.calibration.with_frac_bits(m)
    return m


def choose_thresholds(model: DDNN, data: MultiView, devices: str = "torch") -> dict[str, float]:
    """Pick the local (and edge) exit threshold on held-out data.

    Among T in :data:`THRESHOLD_GRID` whose local-exit fraction is at least
    ``training.min_local_exit``, take the most accurate (ties: the larger T,
    which sends less).  Gives the model a new calibration (``model.calibration``) and returns the thresholds.
    """
    from .runtime import StagedRuntime

    rt = StagedRuntime(model, devices=devices)
    stage = rt.device_stage(data)
    want = float(model.config["training"]["min_local_exit"])
    best: tuple[float, float] | None = None
    best_t = model.calibration.threshold("local")
    absent = model.config["training"]["absent_devices"]
    for t in THRESHOLD_GRID:
        th = {"local": float(t), "edge": float(t)}
        out = rt.run(stage, th, failed=absent)
        frac = out.exit_fraction["local"]
        if frac + 1e-12 < want:
            continue
        key = (out.overall_accuracy, float(t))
        if best is None or key >= best:
            best, best_t = key, float(t)
    model.calibration = model.calibration.with_thresholds({"local": best_t, "edge": best_t})
    return model.calibration.threshold_map()
