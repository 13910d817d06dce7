"""Training helper for device sections: Adam on the shadow weights, clipping, progress.

Recipe (BinaryConnect / BinaryNet style): the forward pass binarises weights
by sign (sign(0) = +1) and activations by sign with a straight-through
gradient; the optimiser updates real-valued shadow weights, which are clipped
to [-1, 1] after every step.  Inputs are the raw uint8 pixels as floats 0..255
(the first block's batch norm normalises them).

>>> from ebnn_codegen.nn.train import train  # doctest: +SKIP
>>> train(model, x_train, y_train, epochs=10, x_val=x_test, y_val=y_test)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .blocks import clip_weights

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def random_shift(xb: torch.Tensor, rng: np.random.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift a whole batch by up to ``max_shift`` pixels in each direction, zero fill (an ``augment``)."""
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    out = torch.zeros_like(xb)
    h, w = xb.shape[2], xb.shape[3]
    out[:, :, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = xb[
        :, :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def random_crop(xb: torch.Tensor, rng: np.random.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image of the batch on its own by up to ``max_shift`` pixels in each direction,
    zero fill (an ``augment``; :func:`random_shift` moves the whole batch by one offset)."""
    n, c, h, w = xb.shape
    padded = nn.functional.pad(xb, (max_shift, max_shift, max_shift, max_shift))
    dy = torch.from_numpy(rng.integers(0, 2 * max_shift + 1, size=n)).to(xb.device)
    dx = torch.from_numpy(rng.integers(0, 2 * max_shift + 1, size=n)).to(xb.device)
    rows = (torch.arange(h, device=xb.device)[None, :] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=xb.device)[None, :] + dx[:, None])[:, None, None, :]
    batch = torch.arange(n, device=xb.device)[:, None, None, None]
    chans = torch.arange(c, device=xb.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_crop_flip(xb: torch.Tensor, rng: np.random.Generator, max_shift: int = 2) -> torch.Tensor:
    """:func:`random_crop`, then each image mirrored left-right with probability 1/2 (for data
    whose classes are symmetric, such as Fashion-MNIST's garments; not for digits)."""
    out = random_crop(xb, rng, max_shift)
    flip = torch.from_numpy(rng.random(len(out)) < 0.5).to(out.device)[:, None, None, None]
    return torch.where(flip, out.flip(3), out)


AUGMENTS: dict[str, Callable[[torch.Tensor, np.random.Generator], torch.Tensor]] = {
    "shift": random_shift,
    "crop": random_crop,
    "crop-flip": random_crop_flip,
}


def float_teacher(in_shape: tuple[int, int, int], classes: int, width: int = 32) -> nn.Module:
    """A small real-valued CNN for :func:`train`'s ``teacher`` (never deployed): two 3x3 conv +
    batch norm + ReLU + 2x2 max-pool stages of ``width`` and ``2 * width`` channels, a hidden
    layer of 128 units, on the raw pixels scaled to 0..1."""
    c, h, w = in_shape
    flat = 2 * width * (h // 4) * (w // 4)

    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / 255.0

    return nn.Sequential(
        Scale(),
        nn.Conv2d(c, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, 128),
        nn.ReLU(),
        nn.Linear(128, classes),
    )


@torch.no_grad()
def reestimate_batch_norm(
    model: nn.Module, x: np.ndarray, batch: int = 1000, device: str | torch.device = "cpu"
) -> None:
    """Recompute every batch norm's running mean and variance over ``x`` (no augmentation) with the
    final binary weights: the running averages kept during training mix statistics of weights
    that changed on the way, and the integer thresholds are folded from these numbers.  The
    statistics become the average over the batches of ``x`` (``momentum=None``); weights and the
    batch norms' affine parameters are not touched.  Leaves the model in eval mode."""
    model.to(device)
    settle_batch_norms(
        model, (torch.from_numpy(np.asarray(x[i : i + batch])).float().to(device) for i in range(0, len(x), batch))
    )
    model.to("cpu")


@torch.no_grad()
def settle_batch_norms(module: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Every batch norm of ``module`` gets the average statistics of ``batches`` (momentum None
    while they pass, then the old momentum back); ``module`` is left in eval mode."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    module.train()
    for xb in batches:
        module(xb)
    for bn, momentum in zip(bns, saved, strict=True):
        bn.momentum = momentum
    module.eval()


def _cosine(opt: torch.optim.Optimizer, total: int, floor: float) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate falls on a cosine over ``total`` steps from the optimiser's to ``floor``
    times it (and stays there)."""
    total = max(1, total)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: floor + (1.0 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def train_head(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 2,
    log: Log | None = _stderr,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> History:
    """Retrain the head of a trained device section on its frozen features.

    The head is the run of linear blocks at the end of ``model.blocks`` plus the exit (for the
    usual shapes: the hidden linear block and the exit); every block before it is frozen, and its
    binary output over ``x`` (no augmentation) is computed once and kept as int8, so each epoch
    costs only the head's few MACs.  The head keeps its weights as the starting point and trains
    in batch-statistics mode with Adam (``lr`` falling on a cosine to ``lr / 100``); then its batch
    norms are re-estimated over the same features (eval mode at the end).  With validation images
    the head is settled so after every epoch, and the best state on them is kept (the starting
    one included).  The binary head is where a small network loses most against a float classifier on the same bits, and it keeps
    improving long after the conv blocks' training has stopped paying.
    """
    from .blocks import LinearBlock

    blocks = list(model.blocks)  # type: ignore[arg-type]
    k = len(blocks)
    while k > 0 and isinstance(blocks[k - 1], LinearBlock):
        k -= 1
    head = nn.Sequential(*blocks[k:], model.exit)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.eval()

    @torch.no_grad()
    def features(images: np.ndarray) -> torch.Tensor:
        out = []
        for i in range(0, len(images), 1000):
            h = torch.from_numpy(np.asarray(images[i : i + 1000])).float()
            for block in blocks[:k]:
                h = block(h)
            out.append(h.to(torch.int8))
        return torch.cat(out)

    f_train = features(x)
    f_val = features(x_val) if x_val is not None else None
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    sched = _cosine(opt, epochs * steps_per_epoch, 0.01)
    loss_fn = nn.CrossEntropyLoss()
    hist = History()

    def settle() -> None:
        """The head's batch-norm statistics re-estimated over the training features (eval mode after)."""
        settle_batch_norms(head, (f_train[i : i + 1000].float() for i in range(0, len(f_train), 1000)))

    @torch.no_grad()
    def head_accuracy(f: torch.Tensor, labels: np.ndarray) -> float:
        pred = torch.cat([head(f[i : i + 5000].float()).argmax(1) for i in range(0, len(f), 5000)])
        return float((pred.numpy() == np.asarray(labels)).mean())

    best, best_state = -1.0, None
    if f_val is not None and y_val is not None:
        head.eval()
        best = head_accuracy(f_val, y_val)
        best_state = _snapshot(head)
        if log:
            log(f"[head] start: validation acc {best:.4f}")
    for epoch in range(epochs):
        head.train()
        t0 = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(len(x)))
        run_loss, seen = 0.0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            loss = loss_fn(head(f_train[idx].float()), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            clip_weights(head)
            run_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
        hist.train_loss.append(run_loss / seen)
        hist.seconds.append(time.perf_counter() - t0)
        shown = ""
        if f_val is not None and y_val is not None:
            state = _snapshot(head)
            settle()
            hist.val_acc.append(head_accuracy(f_val, y_val))
            if hist.val_acc[-1] > best:
                best, best_state = hist.val_acc[-1], _snapshot(head)
            head.load_state_dict(state)
            shown = f" val acc {hist.val_acc[-1]:.4f} (best {best:.4f})"
        if log and ((epoch + 1) % 5 == 0 or epoch + 1 == epochs):
            log(f"[head {epoch + 1}/{epochs}] loss {run_loss / seen:.4f}{shown} ({hist.seconds[-1]:.1f} s)")
    if best_state is not None:
        head.load_state_dict(best_state)
    else:
        settle()
    model.eval()
    return hist


def finetune_deployed(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_val: np.ndarray,
    y_val: np.ndarray,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-4,
    frozen: tuple[str, ...] = ("blocks.0.conv.",),
    check_every: int = 100,
    seed: int = 1,
    augment: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None,
    log: Log | None = _stderr,
) -> History:
    """Fine-tune ``model`` as it is deployed and keep the best state seen on ``(x_val, y_val)``.

    Every batch norm stays in eval mode: its statistics are frozen, so the forward pass is the
    integer network the compiler emits (the thresholds move only through the affine parameters,
    which the straight-through gradient reaches).  Training in batch-statistics mode hides what a
    single flipped weight does to the deployed thresholds, which is why a binary network's eval
    accuracy jumps by points between neighbouring steps.  Parameters whose names start with one
    of ``frozen`` are not updated: by default the first block's weights, which multiply pixels
    0..255 (one flip moves an accumulator by up to 510).  The learning rate falls from ``lr`` to
    0 on a cosine; every ``check_every`` steps and at the end the accuracy on the validation
    images is measured and the best state is restored at the end (ties keep the earlier state;
    the starting state counts).  ``history.val_acc`` holds every check.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = [p for n, p in model.named_parameters() if not n.startswith(frozen)]
    opt = torch.optim.Adam(params, lr=lr)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = _cosine(opt, total, 0.0)
    loss_fn = nn.CrossEntropyLoss()
    hist = History()
    model.eval()
    best = accuracy(model, x_val, y_val)
    best_state = _snapshot(model)
    hist.val_acc.append(best)
    if log:
        log(f"[fine-tune] start: validation acc {best:.4f}")
    xt = torch.from_numpy(np.asarray(x))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    step_all = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(len(x)))
        for step in range(steps_per_epoch):
            model.eval()
            idx = perm[step * batch_size : (step + 1) * batch_size]
            xb = xt[idx].float()
            if augment is not None:
                xb = augment(xb, rng)
            loss = loss_fn(model(xb), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            clip_weights(model)
            step_all += 1
            if (check_every and step_all % check_every == 0) or step_all == total:
                acc = accuracy(model, x_val, y_val)
                hist.val_acc.append(acc)
                if acc > best:
                    best = acc
                    best_state = _snapshot(model)
        hist.seconds.append(time.perf_counter() - t0)
        if log:
            log(
                f"[fine-tune {epoch + 1}/{epochs}] validation acc {hist.val_acc[-1]:.4f}, best {best:.4f} "
                f"({hist.seconds[-1]:.1f} s)"
            )
    model.load_state_dict(best_state)
    model.eval()
    return hist


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    """Top-1 accuracy of the torch model in eval mode on uint8 inputs."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(np.asarray(x[i : i + batch])).float().to(device)
        correct += int((model(xb).argmax(1).cpu().numpy() == np.asarray(y[i : i + batch])).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-2,
    lr_end: float = 1e-4,
    weight_decay: float = 0.0,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    seed: int = 0,
    augment: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None,
    log: Log | None = _stderr,
    progress_every: int = 50,
    device: str | torch.device = "cpu",
    teacher: nn.Module | None = None,
    distill: float = 0.0,
    temperature: float = 4.0,
) -> History:
    """Train ``model`` on uint8 images ``x`` (N, C, H, W) with labels ``y``; returns a History.

    The learning rate follows a cosine schedule from ``lr`` to ``lr_end``.
    Progress (epoch, step, loss, accuracy, time) goes to ``log``; pass
    ``log=None`` for silence.  With a ``teacher`` (a trained model, frozen, in eval mode) and
    ``0 < distill <= 1`` the loss is ``(1 - distill) * cross-entropy + distill * T^2 *
    KL(teacher || model)`` on the class scores softened by ``T = temperature`` (knowledge
    distillation, Hinton et al. 2015), on the same augmented batch.
    """
    if teacher is not None and not 0.0 < distill <= 1.0:
        raise ValueError(f"distill must be in (0, 1] with a teacher, got {distill}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = torch.device(device)
    model.to(device)
    if teacher is not None:
        teacher.to(device)
        teacher.eval()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (lr_end + 0.5 * (lr - lr_end) * (1 + math.cos(math.pi * min(s, total) / total))) / lr
    )
    loss_fn = nn.CrossEntropyLoss()
    hist = History()
    xt = torch.from_numpy(np.asarray(x)).to(device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.from_numpy(rng.permutation(len(x))).to(device)
        run_loss, run_correct, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            xb = xt[idx].float()
            if augment is not None:
                xb = augment(xb, rng)
            yb = yt[idx]
            out = model(xb)
            loss = loss_fn(out, yb)
            if teacher is not None:
                with torch.no_grad():
                    soft = torch.softmax(teacher(xb) / temperature, dim=1)
                kd = nn.functional.kl_div(torch.log_softmax(out / temperature, dim=1), soft, reduction="batchmean") * (
                    temperature**2
                )
                loss = (1.0 - distill) * loss + distill * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            clip_weights(model)
            run_loss += float(loss.detach()) * len(idx)
            run_correct += int((out.argmax(1) == yb).sum())
            seen += len(idx)
            if log and progress_every and (step + 1) % progress_every == 0:
                log(
                    f"  epoch {epoch + 1}/{epochs} step {step + 1}/{steps_per_epoch} "
                    f"loss {run_loss / seen:.4f} acc {run_correct / seen:.4f}"
                )
        dt = time.perf_counter() - t0
        hist.train_loss.append(run_loss / seen)
        hist.train_acc.append(run_correct / seen)
        hist.seconds.append(dt)
        msg = f"[epoch {epoch + 1}/{epochs}] loss {run_loss / seen:.4f} train acc {run_correct / seen:.4f}"
        if x_val is not None and y_val is not None:
            hist.val_acc.append(accuracy(model, x_val, y_val))
            msg += f" val acc {hist.val_acc[-1]:.4f}"
        if log:
            log(msg + f" ({dt:.1f} s)")
    model.eval()
    model.to("cpu")
    return hist
