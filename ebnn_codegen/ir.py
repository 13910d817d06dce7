"""The framework-free IR: plain dataclasses and numpy arrays.

The torch model is lowered into a :class:`Model` whose :class:`Block` s carry
the binary weights (int8 ±1, conv layout F×C×kh×kw; a linear block is a
convolution whose kernel covers its whole input) and, until the fold passes
run, a *sign table*: for every output channel the runs of sign(BN(acc)) over
every integer ``acc`` the accumulator can reach, evaluated by the module's own
batch norm.  The passes in :mod:`ebnn_codegen.passes` fill in the integer
thresholds, the exit's fixed-point affine, the packed weights and the buffer
plan.  ``save``/``load`` write the IR as ``ir.json`` plus ``arrays.npz``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CodegenError

# direction of a hidden block's per-channel threshold
GE, LE, CONST = 1, -1, 0


@dataclass
class Pool:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    def axis(self, n: int) -> tuple[int, int, int]:
        """(kernel, stride, padding) along axis ``n`` (0: rows, 1: columns)."""
        return self.kernel[n], self.stride[n], self.padding[n]


def pool_ranges(n_conv: int, n_out: int, pool: tuple[int, int, int] | None) -> list[tuple[int, int]]:
    """For each conv position along one axis, the outputs ``[lo, hi)`` whose pool window holds it.

    ``pool`` is (kernel, stride, padding) or None (the output is the conv position itself).  An
    empty range (``lo >= hi``): no window holds the position.  The runtime's generic kernel has
    the same function in C (``pool_range`` in ebnn_runtime.c); tests/test_kernel_plans.py checks
    that both agree.
    """
    out = []
    for c in range(n_conv):
        if pool is None:
            lo, hi = c, min(c + 1, n_out)
        else:
            k, s, p = pool
            num = c + p - k + 1
            lo = 0 if num <= 0 else -(-num // s)
            hi = min((c + p) // s + 1, n_out)
        out.append((lo, max(lo, hi)))
    return out


@dataclass(frozen=True)
class FoldedThreshold:
    """A hidden block's sign(BN(acc)) per channel: acc >= t (GE), acc <= t (LE), or a constant."""

    threshold: np.ndarray  # int32 (F,)
    direction: np.ndarray  # int8 (F,): GE, LE or CONST
    constant: np.ndarray  # int8 (F,): the output of CONST channels, else 0


@dataclass(frozen=True)
class FixedPointAffine:
    """The exit's integer class scores: mul * acc + add (int32 per class)."""

    mul: np.ndarray
    add: np.ndarray


@dataclass
class Block:
    index: int
    kind: str  # "conv" | "bconv" | "blinear" | "exit"
    in_shape: tuple[int, int, int]
    conv_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    pool: Pool | None
    weights: np.ndarray  # int8 ±1, (F, C, kh, kw)
    acc_bound: int  # max |accumulator|
    bn: dict[str, np.ndarray] = field(default_factory=dict)  # float64 gamma, beta, mean, var, eps
    # sign(BN(acc)) per channel as runs [[start_acc, sign], ...] over [-acc_bound, acc_bound]
    sign_runs: list[list[list[int]]] | None = None
    # set by FoldBatchNormIntoThreshold (hidden blocks)
    threshold: np.ndarray | None = None  # int32 (F,)
    direction: np.ndarray | None = None  # int8 (F,): GE, LE or CONST
    constant: np.ndarray | None = None  # int8 (F,): the output of CONST channels, else 0
    # set by FoldExitBatchNormIntoFixedPoint (exit block): score = mul * acc + add
    score_mul: np.ndarray | None = None  # int32 (K,)
    score_add: np.ndarray | None = None  # int32 (K,)
    # set by PackBinaryWeights
    packed_weights: np.ndarray | None = None  # uint8 (F, bytes per filter)

    # The fields a pass sets are None before it ran; the accessors below give them typed, with
    # a clear error where a stage that guarantees them (ir_check.validate) has not run.

    @property
    def folded(self) -> FoldedThreshold:
        """(threshold, direction, constant) of a hidden block (set by FoldBatchNormIntoThreshold)."""
        if self.threshold is None or self.direction is None or self.constant is None:
            raise CodegenError(f"block {self.index}: its batch norm has not been folded into a threshold yet")
        return FoldedThreshold(self.threshold, self.direction, self.constant)

    @property
    def affine(self) -> FixedPointAffine:
        """The exit's score = mul * acc + add (set by FoldExitBatchNormIntoFixedPoint)."""
        if self.score_mul is None or self.score_add is None:
            raise CodegenError(f"block {self.index}: the exit's batch norm has not been folded yet")
        return FixedPointAffine(self.score_mul, self.score_add)

    @property
    def packed(self) -> np.ndarray:
        """The packed weight rows (set by PackBinaryWeights)."""
        if self.packed_weights is None:
            raise CodegenError(f"block {self.index}: its weights have not been packed yet")
        return self.packed_weights

    @property
    def is_first(self) -> bool:
        return self.kind == "conv"

    @property
    def is_exit(self) -> bool:
        return self.kind == "exit"

    @property
    def out_channels(self) -> int:
        return self.conv_shape[0]

    @property
    def fan_in(self) -> int:
        return self.in_shape[0] * self.kernel[0] * self.kernel[1]

    @property
    def binary_macs(self) -> int:
        """MACs of the conv/linear part: every conv output once (pool windows may overlap)."""
        c, h, w = self.conv_shape
        return c * h * w * self.fan_in

    @property
    def torch_shape(self) -> tuple[int, ...]:
        """Shape of one sample's output as torch gives it: (F,) for linear blocks, else (C, H, W)."""
        return (self.out_channels,) if self.kind in ("blinear", "exit") else self.out_shape

    @property
    def out_bytes(self) -> int:
        """Size of this block's packed output (activation layout)."""
        c, h, w = self.out_shape
        return h * w * ((c + 7) // 8)


@dataclass(frozen=True)
class Buffers:
    """The working-memory plan (set by PlanBuffers): hidden block ``i`` writes slot ``slot[i]`` at
    ``slot_offset[slot[i]]`` of the workspace; its copy in the trace starts at ``trace_offsets[i]``.

    ``buffers["trace_bytes"]`` (item access by field name) is kept for callers written when the
    plan was a dict.
    """

    slot: tuple[int, ...]
    slot_offset: tuple[int, ...]
    slot_bytes: tuple[int, ...]
    workspace_bytes: int
    trace_offsets: tuple[int, ...]
    trace_bytes: int

    def __getitem__(self, key: str) -> Any:
        if key not in _BUFFER_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Buffers:
        return cls(
            slot=tuple(data["slot"]),
            slot_offset=tuple(data["slot_offset"]),
            slot_bytes=tuple(data["slot_bytes"]),
            workspace_bytes=data["workspace_bytes"],
            trace_offsets=tuple(data["trace_offsets"]),
            trace_bytes=data["trace_bytes"],
        )


_BUFFER_FIELDS = ("slot", "slot_offset", "slot_bytes", "workspace_bytes", "trace_offsets", "trace_bytes")


@dataclass
class Model:
    name: str
    input_shape: tuple[int, int, int]
    blocks: list[Block]
    source_hash: str = ""
    tool_version: str = ""
    score_scale_log2: int | None = None  # scores / 2**score_scale_log2 ~ float scores
    score_resolution: float | None = None  # worst-case |int/scale - exact affine|
    buffers: Buffers | None = None  # set by PlanBuffers

    @property
    def plan(self) -> Buffers:
        """The buffer plan; raises unless the IR has been through the pass pipeline."""
        if self.buffers is None:
            raise CodegenError("the IR has not been through the pass pipeline (no buffer plan)")
        return self.buffers

    @property
    def hidden(self) -> list[Block]:
        return self.blocks[:-1]

    @property
    def exit(self) -> Block:
        return self.blocks[-1]

    @property
    def num_classes(self) -> int:
        return self.exit.out_channels

    @property
    def input_bytes(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def scale_log2(self) -> int:
        """log2 of the score scale (set with the exit's fixed-point fold)."""
        if self.score_scale_log2 is None:
            raise CodegenError("the exit block has not been folded yet (no score scale)")
        return self.score_scale_log2

    @property
    def score_scale(self) -> float:
        return float(2.0**self.scale_log2)


_ARRAY_FIELDS = ("weights", "threshold", "direction", "constant", "score_mul", "score_add", "packed_weights")


def save(model: Model, directory: str | Path) -> None:
    """Write the IR as ``ir.json`` (everything but arrays) and ``arrays.npz``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    blocks: list[dict[str, Any]] = []
    for b in model.blocks:
        entry: dict[str, Any] = {}
        for f in dataclasses.fields(b):
            v = getattr(b, f.name)
            if f.name in _ARRAY_FIELDS:
                if v is not None:
                    arrays[f"b{b.index}.{f.name}"] = v
                entry[f.name] = None if v is None else f"b{b.index}.{f.name}"
            elif f.name == "bn":
                for k, arr in v.items():
                    arrays[f"b{b.index}.bn.{k}"] = arr
                entry["bn"] = sorted(v)
            elif f.name == "pool":
                entry["pool"] = None if v is None else dataclasses.asdict(v)
            else:
                entry[f.name] = v
        blocks.append(entry)
    meta: dict[str, Any] = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name != "blocks"}
    meta["buffers"] = None if model.buffers is None else model.buffers.to_json()
    meta["blocks"] = blocks
    (d / "ir.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    # allow_pickle=False: numeric arrays only, as load reads them (naming the keyword also tells
    # mypy that ``**arrays`` cannot bind it)
    np.savez(d / "arrays.npz", allow_pickle=False, **arrays)


def _pair(v: Any) -> tuple[int, int]:
    a, b = v
    return (a, b)


def _triple(v: Any) -> tuple[int, int, int]:
    a, b, c = v
    return (a, b, c)


def _block_from_json(entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> Block:
    """The block of an ``ir.json`` entry; its arrays from ``arrays.npz``.  A field missing from
    the entry takes the dataclass default (an IR saved before the pass that sets it)."""

    def array(key: str) -> np.ndarray | None:
        name = entry.get(key)
        return None if name is None else arrays[name]

    pool = entry["pool"]
    return Block(
        index=entry["index"],
        kind=entry["kind"],
        in_shape=_triple(entry["in_shape"]),
        conv_shape=_triple(entry["conv_shape"]),
        out_shape=_triple(entry["out_shape"]),
        kernel=_pair(entry["kernel"]),
        stride=_pair(entry["stride"]),
        padding=_pair(entry["padding"]),
        pool=None if pool is None else Pool(_pair(pool["kernel"]), _pair(pool["stride"]), _pair(pool["padding"])),
        weights=arrays[entry["weights"]],
        acc_bound=entry["acc_bound"],
        bn={k: arrays[f"b{entry['index']}.bn.{k}"] for k in entry.get("bn", [])},
        sign_runs=entry.get("sign_runs"),
        threshold=array("threshold"),
        direction=array("direction"),
        constant=array("constant"),
        score_mul=array("score_mul"),
        score_add=array("score_add"),
        packed_weights=array("packed_weights"),
    )


def load(directory: str | Path) -> Model:
    d = Path(directory)
    meta = json.loads((d / "ir.json").read_text())
    with np.load(d / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    buffers = meta.get("buffers")
    return Model(
        name=meta["name"],
        input_shape=_triple(meta["input_shape"]),
        blocks=[_block_from_json(entry, arrays) for entry in meta["blocks"]],
        source_hash=meta.get("source_hash", ""),
        tool_version=meta.get("tool_version", ""),
        score_scale_log2=meta.get("score_scale_log2"),
        score_resolution=meta.get("score_resolution"),
        buffers=None if buffers is None else Buffers.from_json(buffers),
    )


def constants_sha256(model: Model) -> str:
    """SHA-256 (hex) of the model's constants as the compiler lowered them: input shape, score
    scale, each block's kind, shapes, kernel, stride, padding, pool, packed weights,
    thresholds, directions, constant channels and exit affine.  Not of the checkpoint file:
    re-saving a checkpoint, or importing the model from another framework, keeps it; any
    change to what the C computes changes it.  The generated files' provenance header and a
    board's INFO reply carry it."""
    h = hashlib.sha256()
    h.update(repr((tuple(model.input_shape), model.score_scale_log2)).encode())
    for b in model.blocks:
        h.update(repr((b.kind, b.in_shape, b.out_shape, b.kernel, b.stride, b.padding)).encode())
        h.update(repr(None if b.pool is None else (b.pool.kernel, b.pool.stride, b.pool.padding)).encode())
        for arr in (b.packed_weights, b.threshold, b.direction, b.constant, b.score_mul, b.score_add):
            if arr is not None:
                a = np.ascontiguousarray(arr)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
    return h.hexdigest()
