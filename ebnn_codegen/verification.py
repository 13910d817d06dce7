"""Verification: a target's output against PyTorch, bit for bit, and against the IR reference.

:func:`compare` takes the :class:`~ebnn_codegen.targets.base.RunResult` of any target and
returns a :class:`VerifyReport`: every hidden bit compared with torch, the scores within
:func:`score_tolerance` (the fixed-point resolution plus float32 rounding in torch's batch
norm), the argmax outside ties, and (for up to ``REFERENCE_CHECK_LIMIT`` inputs, or on
request) the IR reference interpreter bit for bit, scores included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import reference
from .ir import Model
from .nn.model import DeviceSection
from .targets.base import RunResult, random_inputs

__all__ = ["REFERENCE_CHECK_LIMIT", "VerifyReport", "compare", "random_inputs", "score_tolerance", "torch_outputs"]


@torch.no_grad()
def torch_outputs(model: DeviceSection, x: np.ndarray, batch: int = 1024) -> tuple[np.ndarray, list[np.ndarray]]:
    """Float scores (N, K) and ±1 hidden outputs of the torch model in eval mode."""
    model = model.eval()
    scores, layers = [], []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(np.asarray(x[i : i + batch])).float()
        s, outs = model.forward_all(xb)
        scores.append(s.numpy())
        layers.append([o.numpy().astype(np.int8) for o in outs])
    return np.concatenate(scores), [np.concatenate([lb[j] for lb in layers]) for j in range(len(model.blocks))]


def score_tolerance(graph: Model) -> np.ndarray:
    """Per class: the fixed-point resolution plus float32 rounding in torch's batch norm."""
    ex = graph.exit
    a = np.abs(ex.bn["gamma"] / np.sqrt(ex.bn["var"] + ex.bn["eps"]))
    float_err = 1e-6 * (a * (ex.acc_bound + np.abs(ex.bn["mean"])) + np.abs(ex.bn["beta"]) + 1e-3)
    assert graph.score_resolution is not None
    return np.asarray(graph.score_resolution + float_err)


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
    chip: str | None = None  # the chip that ran the code (None: the host)
    chip_note: str | None = None  # why it is not the target's own chip (None: it is)

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
            f"{verdict}: {self.samples} samples on {self.target} ({self._where()}{self.kernels} kernels)",
            f"  hidden blocks: {self.blocks}, bits compared with torch: {self.bits_compared}, mismatches: {self.bit_mismatches}",
            f"  scores: max |C/scale - torch| = {self.score_max_error:.3g} (tolerance {self.score_tolerance:.3g})",
            f"  argmax: {self.argmax_mismatches} mismatches, {self.ambiguous} ties within the resolution",
            "  C == IR reference (bits, scores, predictions): "
            + {True: "yes", False: "NO", None: "not checked (--reference to add it)"}[self.reference_exact],
        ]
        if self.first_mismatch:
            lines.append(f"  first mismatch: {self.first_mismatch}")
        return "\n".join(lines)

    def _where(self) -> str:
        if self.chip is None:
            return ""
        if self.chip_note:
            return f"emulated {self.chip}, NOT the target's chip: {self.chip_note}; "
        return f"{self.chip}, "

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``verify --json``: target and chip first, then every field, then ``ok``."""
        first = {"target": self.target, "chip": self.chip, "chip_note": self.chip_note}
        return {**first, **{k: v for k, v in self.__dict__.items() if k not in first}, "ok": self.ok}


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
    compared, mism, first = _compare_bits(result.layers, t_layers)
    tol = score_tolerance(graph)
    err = np.abs(result.scores / result.score_scale - t_scores)
    ambiguous = _ties(t_scores, float(tol.max()))
    t_pred = t_scores.argmax(axis=1)
    ref_exact = _same_as_reference(graph, x, result) if check_reference else None
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
        scores_within_tolerance=bool(np.all(err <= tol[None, :])),
        argmax_mismatches=int(np.sum((t_pred != result.pred) & ~ambiguous)),
        ambiguous=int(ambiguous.sum()),
        reference_exact=ref_exact,
        details={"torch_argmax_agreement": float(np.mean(t_pred == result.pred)) if len(x) else 1.0},
        chip=result.stats.get("chip"),
        chip_note=result.stats.get("chip_note"),
    )


def _compare_bits(ours: list[np.ndarray], theirs: list[np.ndarray]) -> tuple[int, int, str | None]:
    """Bits compared, mismatches, and where the first one is."""
    mism, compared, first = 0, 0, None
    for i, (a, b) in enumerate(zip(ours, theirs)):
        diff = a != b
        compared += a.size
        if diff.any():
            mism += int(diff.sum())
            if first is None:
                idx = tuple(int(v) for v in np.argwhere(diff)[0])
                first = f"block {i} at (sample, channel, y, x) = {idx}: C {int(a[idx])}, torch {int(b[idx])}"
    return compared, mism, first


def _ties(t_scores: np.ndarray, tol: float) -> np.ndarray:
    """Samples whose two best torch scores are within twice the tolerance (argmax undecided)."""
    if t_scores.shape[1] < 2:
        return np.zeros(len(t_scores), bool)
    top2 = np.sort(t_scores, axis=1)[:, -2:]
    return np.asarray((top2[:, 1] - top2[:, 0]) <= 2 * tol)


def _same_as_reference(graph: Model, x: np.ndarray, result: RunResult) -> bool:
    ref = reference.run(graph, x)
    return bool(
        np.array_equal(ref.scores, result.scores)
        and np.array_equal(ref.pred, result.pred)
        and all(np.array_equal(a, b) for a, b in zip(ref.layers, result.layers))
    )
