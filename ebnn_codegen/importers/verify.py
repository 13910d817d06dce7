"""``verify --against``: the generated C against the source model's own runtime.

The same uint8 inputs go to the C (on any target) and, mapped to ``S * pixel + O``
(the import's ``--input-scale``/``--input-offset``), to the source graph run by
onnxruntime (plain ONNX) or qonnx's executor (QONNX), with every hidden block's
activation tensor added as a graph output.  Every hidden block's ±1 output and
the class must be equal, the scores within the fixed-point resolution (plus the
source's own float32 rounding).  The usual check against the torch model runs too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import api, targets
from ..errors import CodegenError
from ..targets.base import check_inputs
from .graph import SourceGraph, SourceRunner, file_sha256, load_onnx
from .onnx import import_onnx, pixels_to_source


@dataclass
class AgainstReport:
    source: str
    source_format: str
    target: str
    kernels: str
    samples: int
    blocks_compared: int
    bits_compared: int
    bit_mismatches: int
    first_mismatch: str | None
    score_max_error: float
    score_tolerance: float
    scores_within_tolerance: bool
    argmax_mismatches: int
    ambiguous: int
    torch: api.VerifyReport
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.bit_mismatches == 0 and self.scores_within_tolerance and self.argmax_mismatches == 0 and self.torch.ok
        )

    def summary(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        lines = [
            f"{verdict}: {self.samples} samples on {self.target} ({self.kernels} kernels) against {self.source} "
            f"({self.source_format}, {'qonnx executor' if self.source_format == 'qonnx' else 'onnxruntime'})",
            f"  hidden blocks compared: {self.blocks_compared}, bits compared with the source: {self.bits_compared}, "
            f"mismatches: {self.bit_mismatches}",
            f"  scores: max |C/scale - source| = {self.score_max_error:.3g} (tolerance {self.score_tolerance:.3g})",
            f"  argmax: {self.argmax_mismatches} mismatches, {self.ambiguous} ties within the resolution",
            f"  C == torch model: {'yes' if self.torch.ok else 'NO'} ({self.torch.bits_compared} bits, "
            f"{self.torch.bit_mismatches} mismatches)",
        ]
        if self.first_mismatch:
            lines.append(f"  first mismatch: {self.first_mismatch}")
        elif self.torch.first_mismatch:
            lines.append(f"  first mismatch (torch): {self.torch.first_mismatch}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "torch"}
        d["torch"] = {**self.torch.__dict__, "ok": self.torch.ok}
        d["ok"] = self.ok
        return d


def _mapping(dev: Any, source: str | os.PathLike[str]) -> dict[str, Any]:
    """The import notes of the checkpoint, or of an import of ``source`` made now."""
    meta = (dev.config.get("meta") or {}).get("import")
    if isinstance(meta, dict):
        want = meta.get("sha256")
        if want and want != file_sha256(source):
            raise CodegenError(
                f"{source}: not the file this checkpoint was imported from ({meta.get('source')}; sha256 differs)",
                hint="verify against the ONNX file given to `ebnn-gen import`",
            )
        return meta
    fresh = import_onnx(source)
    if [b.type for b in fresh.model.spec.layers] != [b.type for b in dev.spec.layers]:
        raise CodegenError(f"{source}: its blocks do not correspond to the checkpoint's blocks")
    mapping: dict[str, Any] = fresh.model.config["meta"]["import"]
    return mapping


def verify_against(
    model: Any,
    source: str | os.PathLike[str],
    x: np.ndarray | None = None,
    *,
    samples: int = 64,
    target: str = "host",
    kernels: str = "fast",
    seed: int = 0,
) -> AgainstReport:
    """Run the generated C and the source model on the same inputs; compare bits, scores, classes."""
    dev = api._device(model)
    meta = _mapping(dev, source)
    graph = api.compile(dev)
    if x is None:
        x = api.random_inputs(graph.input_shape, samples, seed)
    x = check_inputs(graph, x)
    result = targets.get(target).run(graph, x, kernels=kernels)
    torch_rep = api.compare(graph, dev, x, result, target, kernels)

    g = SourceGraph(load_onnx(source))
    names = list(meta["block_outputs"]) + [meta["scores"]]
    for n in names:
        if n not in g.producer and n not in [i.name for i in g.inputs]:
            raise CodegenError(f"{source}: has no tensor '{n}' (the checkpoint's block output)")
    src_shape = tuple(meta["input_shape"])
    xs = pixels_to_source(x.reshape(len(x), *src_shape[1:]), meta["input_scale"], meta["input_offset"])
    outs = SourceRunner(g, names)(xs) if len(x) else [np.zeros((0,))] * len(names)
    mism, compared, first, per_block = 0, 0, None, []
    for i, (c_bits, src) in enumerate(zip(result.layers, outs[:-1])):
        src = np.asarray(src).reshape(c_bits.shape)
        bits = np.where(src > 0, 1, np.where(src < 0, -1, 0))
        diff = bits != c_bits
        compared += diff.size
        per_block.append(int(diff.sum()))
        if diff.any():
            mism += int(diff.sum())
            if first is None:
                idx = tuple(int(v) for v in np.argwhere(diff)[0])
                first = f"block {i} at (sample, channel, ...) = {idx}: C {int(c_bits[idx])}, source {float(src[idx]):g}"
    s_scores = np.asarray(outs[-1], dtype=np.float64).reshape(len(x), -1)
    tol = api.score_tolerance(graph)[None, :] + 1e-5 * (np.abs(s_scores) + 1e-3)
    err = np.abs(result.scores / result.score_scale - s_scores)
    within = bool(np.all(err <= tol))
    if s_scores.shape[1] > 1 and len(x):
        top2 = np.sort(s_scores, axis=1)[:, -2:]
        ambiguous = (top2[:, 1] - top2[:, 0]) <= 2 * tol.max(axis=1)
    else:
        ambiguous = np.zeros(len(x), bool)
    s_pred = s_scores.argmax(axis=1) if len(x) else np.zeros(0, int)
    argmax_mism = int(np.sum((s_pred != result.pred) & ~ambiguous))
    return AgainstReport(
        source=os.fspath(source),
        source_format=meta.get("format", "qonnx" if g.is_qonnx else "onnx"),
        target=target,
        kernels=kernels,
        samples=len(x),
        blocks_compared=len(result.layers),
        bits_compared=compared,
        bit_mismatches=mism,
        first_mismatch=first,
        score_max_error=float(err.max(initial=0.0)),
        score_tolerance=float(tol.max(initial=0.0)),
        scores_within_tolerance=within,
        argmax_mismatches=argmax_mism,
        ambiguous=int(ambiguous.sum()),
        torch=torch_rep,
        details={
            "source_argmax_agreement": float(np.mean(s_pred == result.pred)) if len(x) else 1.0,
            "block_mismatches": per_block,
        },
    )
