"""The documented Python API; the CLI is a thin shell over these functions."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import batches, checkpoint, codegen, progress, targets
from . import ir as ir_mod
from .compiler import compile_model, render
from .errors import CheckpointError, CodegenError, ConfigError
from .ir import Model
from .nn.model import DeviceSection
from .targets.base import RunResult, check_inputs

Log = Callable[[str], None]


def build(config: dict) -> torch.nn.Module:
    """A trainable device section from a config dict (see :mod:`ebnn_codegen.config`)."""
    return DeviceSection(config)


def save(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Save a model as its config and state_dict (see :mod:`ebnn_codegen.checkpoint`)."""
    checkpoint.save(model, path)


def load(path: str | os.PathLike) -> torch.nn.Module:
    """Load a checkpoint with ``torch.load(weights_only=True)``; the model is in eval mode."""
    obj = checkpoint.read_checkpoint(path)
    kind = obj["kind"]
    try:
        if kind == "device":
            model = DeviceSection(obj["config"])
        elif kind == "ddnn":
            from .ddnn.model import DDNN

            model = DDNN(obj["config"])
        else:
            raise CheckpointError(f"{path}: unknown model kind {kind!r}")
    except ConfigError as exc:
        raise ConfigError(f"{path}: invalid config: {exc.message}", hint=exc.hint) from None
    checkpoint.load_state(model, obj["state_dict"], str(path))
    return model.eval()


def _device(model: torch.nn.Module | str | os.PathLike) -> DeviceSection:
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    if not isinstance(model, DeviceSection):
        raise CodegenError(
            f"expected a device-section model, got {type(model).__name__}",
            hint="for DDNN checkpoints use `ebnn-gen ddnn export`",
        )
    return model.eval()


def compile(  # noqa: A001 - the public name the docs use
    model: torch.nn.Module | str | os.PathLike,
    *,
    name: str | None = None,
    log: Log | None = None,
    save_ir: str | os.PathLike | None = None,
) -> Model:
    """Lower a model (or checkpoint path) through every pass; returns the final IR."""
    return compile_model(_device(model), name=name, log=log, save_ir=save_ir)


def export(
    model: torch.nn.Module | str | os.PathLike | Model,
    outdir: str | os.PathLike,
    *,
    name: str | None = None,
    kernels: str = "fast",
    log: Log | None = None,
    extra_files: dict[str, str] | None = None,
) -> list[Path]:
    """Write the C of a model into ``outdir`` (all files or none). Returns the paths written."""
    graph = model if isinstance(model, Model) else compile(model, name=name, log=log)
    files = render(graph, kernels)
    files.update(extra_files or {})
    if log:
        log(f"[render] {len(files)} files -> {outdir}")
    return codegen.write_files(files, outdir)


@torch.no_grad()
def torch_outputs(model: DeviceSection, x: np.ndarray, batch: int = 1024) -> tuple[np.ndarray, list[np.ndarray]]:
    """Float scores (N, K) and ±1 hidden outputs of the torch model in eval mode."""
    model = model.eval()
    scores, layers = [], []
    for i in progress.iterate(range(0, len(x), batch), desc=f"PyTorch ({batch} per batch)", unit="batch"):
        xb = torch.from_numpy(np.asarray(x[i : i + batch])).float()
        s, outs = model.forward_all(xb)
        scores.append(s.numpy())
        layers.append([o.numpy().astype(np.int8) for o in outs])
    return np.concatenate(scores), [np.concatenate([lb[j] for lb in layers]) for j in range(len(model.blocks))]


def run(
    model: torch.nn.Module | str | os.PathLike | Model,
    x: np.ndarray,
    *,
    target: str = "host",
    kernels: str = "fast",
) -> RunResult:
    """Run the generated C of ``model`` on uint8 inputs (N, C, H, W) on a target."""
    graph = model if isinstance(model, Model) else compile(model)
    x = check_inputs(graph, x)
    return batches.run_target(targets.get(target), graph, x, kernels, target)


def score_tolerance(graph: Model) -> np.ndarray:
    """Per class: the fixed-point resolution plus float32 rounding in torch's batch norm."""
    ex = graph.exit
    a = np.abs(ex.bn["gamma"] / np.sqrt(ex.bn["var"] + ex.bn["eps"]))
    float_err = 1e-6 * (a * (ex.acc_bound + np.abs(ex.bn["mean"])) + np.abs(ex.bn["beta"]) + 1e-3)
    assert graph.score_resolution is not None
    return graph.score_resolution + float_err


@dataclass
class VerifyReport:
    target: str
    kernels: str
    samples: int
    blocks: int
    bits_compared: int
    bit_mismatches: int
    first_mismatch: str | None
    score_max_error: float
    score_tolerance: float
    scores_within_tolerance: bool
    argmax_mismatches: int
    ambiguous: int  # samples whose two best torch scores are within the tolerance
    reference_exact: bool | None  # target == IR reference, bit for bit (scores too); None: not checked
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.bit_mismatches == 0
            and self.scores_within_tolerance
            and self.argmax_mismatches == 0
            and self.reference_exact is not False
        )

    def summary(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        lines = [
            f"{verdict}: {self.samples} samples on {self.target} ({self.kernels} kernels)",
            f"  hidden blocks: {self.blocks}, bits compared with torch: {self.bits_compared}, mismatches: {self.bit_mismatches}",
            f"  scores: max |C/scale - torch| = {self.score_max_error:.3g} (tolerance {self.score_tolerance:.3g})",
            f"  argmax: {self.argmax_mismatches} mismatches, {self.ambiguous} ties within the resolution",
            "  C == IR reference (bits, scores, predictions): "
            + {True: "yes", False: "NO", None: "not checked (--reference to add it)"}[self.reference_exact],
        ]
        if self.first_mismatch:
            lines.append(f"  first mismatch: {self.first_mismatch}")
        if self.details.get("accuracy") is not None:
            d = self.details
            lines.append(
                f"  accuracy (C, against the labels): {100 * d['accuracy']:.2f} % ({d['correct']} of {d['labelled']})"
            )
        return "\n".join(lines)


REFERENCE_CHECK_LIMIT = 2048


def compare(
    graph: Model,
    model: DeviceSection,
    x: np.ndarray,
    result: RunResult,
    target: str,
    kernels: str,
    check_reference: bool | None = None,
) -> VerifyReport:
    """Compare a target's result with torch, bit for bit, and with the IR reference.

    The reference interpreter is the slow oracle of the tests; it is consulted for
    ``check_reference=True``, or by default for at most REFERENCE_CHECK_LIMIT inputs.
    """
    if check_reference is None:
        check_reference = len(x) <= REFERENCE_CHECK_LIMIT
    t_scores, t_layers = torch_outputs(model, x)
    ref = batches.run_reference(graph, x) if check_reference else None
    mism, compared, first = 0, 0, None
    for i, (a, b) in enumerate(zip(result.layers, t_layers)):
        diff = a != b
        compared += a.size
        if diff.any():
            mism += int(diff.sum())
            if first is None:
                idx = tuple(int(v) for v in np.argwhere(diff)[0])
                first = f"block {i} at (sample, channel, y, x) = {idx}: C {int(a[idx])}, torch {int(b[idx])}"
    tol = score_tolerance(graph)
    err = np.abs(result.scores / result.score_scale - t_scores)
    within = bool(np.all(err <= tol[None, :]))
    top2 = np.sort(t_scores, axis=1)[:, -2:] if t_scores.shape[1] > 1 else None
    ambiguous = np.zeros(len(x), bool)
    if top2 is not None:
        ambiguous = (top2[:, 1] - top2[:, 0]) <= 2 * tol.max()
    t_pred = t_scores.argmax(axis=1)
    argmax_mism = int(np.sum((t_pred != result.pred) & ~ambiguous))
    ref_exact = (
        None
        if ref is None
        else (
            np.array_equal(ref.scores, result.scores)
            and np.array_equal(ref.pred, result.pred)
            and all(np.array_equal(a, b) for a, b in zip(ref.layers, result.layers))
        )
    )
    if first is None and ref_exact is False:
        first = "target output differs from the IR reference"
    return VerifyReport(
        target=target,
        kernels=kernels,
        samples=len(x),
        blocks=len(graph.hidden),
        bits_compared=compared,
        bit_mismatches=mism,
        first_mismatch=first,
        score_max_error=float(err.max(initial=0.0)),
        score_tolerance=float(tol.max()),
        scores_within_tolerance=within,
        argmax_mismatches=argmax_mism,
        ambiguous=int(ambiguous.sum()),
        reference_exact=None if ref_exact is None else bool(ref_exact),
        details={"torch_argmax_agreement": float(np.mean(t_pred == result.pred)) if len(x) else 1.0},
    )


def random_inputs(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """Random uint8 inputs, with an all-0 and an all-255 image first (the range's extremes)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    if n >= 1:
        x[0] = 0
    if n >= 2:
        x[1] = 255
    return x


def verify(
    model: torch.nn.Module | str | os.PathLike,
    x: np.ndarray | None = None,
    *,
    samples: int = 64,
    target: str = "host",
    kernels: str = "fast",
    seed: int = 0,
    check_reference: bool | None = None,
    labels: np.ndarray | None = None,
) -> VerifyReport:
    """Run the generated C on ``x`` (random uint8 by default) and compare it with torch;
    with ``labels`` (integers, one per input) the report also holds the C's accuracy."""
    dev = _device(model)
    graph = compile(dev)
    if x is None:
        x = random_inputs(graph.input_shape, samples, seed)
    x = check_inputs(graph, x)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.shape != (len(x),):
            raise CodegenError(f"labels must be {len(x)} integers (one per input), got {labels.dtype} {labels.shape}")
    result = batches.run_target(targets.get(target), graph, x, kernels, target)
    rep = compare(graph, dev, x, result, target, kernels, check_reference)
    if labels is not None:
        correct = int(np.sum(result.pred == labels))
        rep.details.update(accuracy=correct / len(x) if len(x) else None, correct=correct, labelled=len(x))
    return rep


def report(model: torch.nn.Module | str | os.PathLike | Model) -> dict[str, Any]:
    """Per-block MACs and memory, before touching a board (numbers computed from the IR)."""
    graph = model if isinstance(model, Model) else compile(model)
    assert graph.buffers is not None
    blocks = []
    for b in graph.blocks:
        weight_bytes = int(b.packed_weights.size) if b.packed_weights is not None else 0
        if b.is_exit:
            thr_bytes = 8 * b.out_channels  # int32 multiplier and offset per class
        else:
            thr_bytes = 4 * b.out_channels + (b.out_channels + 7) // 8  # int32 threshold + flip bit
        blocks.append(
            {
                "index": b.index,
                "type": b.kind,
                "input_shape": list(b.in_shape),
                "output_shape": list(b.out_shape),
                "binary_macs": b.binary_macs,
                "weight_bytes": weight_bytes,
                "threshold_bytes": thr_bytes,
                "buffer_bytes": 0 if b.is_exit else b.out_bytes,
            }
        )
    flash = sum(e["weight_bytes"] + e["threshold_bytes"] for e in blocks)
    return {
        "name": graph.name,
        "input_shape": list(graph.input_shape),
        "num_classes": graph.num_classes,
        "score_scale": graph.score_scale,
        "score_scale_log2": graph.score_scale_log2,
        "blocks": blocks,
        "totals": {
            "binary_macs": sum(e["binary_macs"] for e in blocks),
            "flash_bytes": flash,
            "model_constants_bytes": flash,
            "static_ram_bytes": int(graph.buffers["workspace_bytes"]),
            "workspace_bytes": int(graph.buffers["workspace_bytes"]),
            "trace_bytes": int(graph.buffers["trace_bytes"]),
            "input_bytes": graph.input_bytes,
        },
        "notes": "flash_bytes counts model constants (weights, thresholds, exit affine) only; "
        "code size and the 256-byte popcount table are measured per target by `report --target`",
    }


def load_ir(path: str | os.PathLike) -> Model:
    return ir_mod.load(path)
