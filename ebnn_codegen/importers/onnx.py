"""ONNX / QONNX -> an ebnn-codegen device section (config + state_dict).

The importer walks the graph from its input and matches, per block::

    [input path]  Conv | Gemm | MatMul   (constant weights equal to ±alpha per output channel)
                  [elementwise ops]  [MaxPool  [elementwise ops]]  [Flatten | Reshape]

The elementwise ops (bias, BatchNormalization, Mul/Add/Div/Sub, Sign, Where/Greater,
BipolarQuant, Quant, MultiThreshold, ...) are never interpreted by hand: the
importer runs them *with the source's own runtime* on every integer the block's
accumulator can reach and records where the output changes sign, the way
lowering evaluates a trained block's own batch norm.  A max-pool between them is
exact when the ops before it are monotonic in the accumulator (a decreasing
channel pools the minimum: its weights are negated, which the kernels already
compute exactly).  The last linear op is the exit; the ops after it must be an
affine function of the accumulator per class.

The first block takes uint8 pixels: the source sees ``x = S * pixel + O``
(``--input-scale``/``--input-offset``) passed through its input path, which
must be an affine function of the pixel.

Everything else is refused with one line naming the node, its op type and the
reason (docs/import.md lists them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ..config import MAX_INPUT_CHANNELS, MAX_SPATIAL, parse_config
from ..errors import ConfigError
from ..nn.model import DeviceSection
from .graph import ImportRefused, SourceGraph, file_sha256, load_onnx, node_label, refuse

LINEAR_OPS = frozenset({"Conv", "Gemm", "MatMul"})
SHAPE_OPS = frozenset({"Flatten", "Reshape"})
POOL_OPS = frozenset({"MaxPool"})
ELEMENTWISE_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sign", "Where", "Greater", "GreaterOrEqual", "Less",
        "LessOrEqual", "Equal", "Not", "Cast", "Identity", "BatchNormalization", "Relu", "Clip", "Tanh",
        "Sigmoid", "HardTanh", "Round", "Floor", "Ceil", "Max", "Min", "Dropout", "Quant", "BipolarQuant",
        "MultiThreshold", "Trunc",
    }
)  # fmt: skip
IGNORED_CONSUMERS = frozenset({"Shape", "Size"})  # read only the shape of a tensor
MAX_EVAL_VALUES = 1 << 25  # accumulator values x channels evaluated per block


def pixels_to_source(pixels: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """uint8 pixels -> the float32 the source model sees: ``S * pixel + O`` rounded once."""
    source: np.ndarray = (np.float64(scale) * pixels.astype(np.float64) + np.float64(offset)).astype(np.float32)
    return source


@dataclass
class Segment:
    """The ops between one linear op and the next."""

    region1: list[onnx.NodeProto] = field(default_factory=list)
    pool: onnx.NodeProto | None = None
    region2: list[onnx.NodeProto] = field(default_factory=list)
    shape_ops: list[onnx.NodeProto] = field(default_factory=list)
    end: str = ""  # the activation tensor (before any reshape)
    next_tensor: str = ""  # what the next linear op reads
    next_node: onnx.NodeProto | None = None  # the next linear op, or None at the graph output


@dataclass
class Stage:
    node: onnx.NodeProto
    kind: str  # "conv" | "linear"
    weight: np.ndarray  # ±1 float64, (F, C, kh, kw) or (F, in)
    alpha: np.ndarray  # float64 (F,), signed
    bias: np.ndarray  # float64 (F,)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    segment: Segment = field(default_factory=Segment)


@dataclass
class ImportResult:
    model: DeviceSection
    source_format: str  # "onnx" | "qonnx"
    blocks: list[dict[str, Any]]


# ---------------------------------------------------------------------------------------------
# walking the graph
# ---------------------------------------------------------------------------------------------


def _main_consumers(g: SourceGraph, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in g.consumers.get(tensor, []) if n.op_type not in IGNORED_CONSUMERS]


def _region(
    g: SourceGraph, start: str, where: onnx.NodeProto
) -> tuple[list[onnx.NodeProto], str, onnx.NodeProto | None]:
    """Elementwise nodes fed by ``start`` up to the next non-elementwise op.

    Returns (nodes in graph order, the tensor leaving the region, the node reading it or None
    at a graph output).
    """
    nodes: dict[int, onnx.NodeProto] = {}
    frontier = [start]
    boundary: list[tuple[onnx.NodeProto, str]] = []
    produced = {start}
    while frontier:
        t = frontier.pop()
        for n in _main_consumers(g, t):
            if n.op_type in ELEMENTWISE_OPS:
                if id(n) not in nodes:
                    nodes[id(n)] = n
                    outs = [n.output[0]]  # Dropout's mask output is never used downstream
                    produced.update(outs)
                    frontier.extend(outs)
            else:
                boundary.append((n, t))
    ordered = sorted(nodes.values(), key=lambda n: g.order[id(n)])
    for n in ordered:
        for i in n.input:
            if i and i not in produced and not g.is_const(i):
                raise refuse(n, "joins two branches of the graph (only a chain of blocks is supported)")
    out_tensors = {t for _, t in boundary}
    leaving = [t for t in produced if t in g.outputs]
    if len(boundary) > 1 or len(out_tensors) > 1 or (boundary and leaving and leaving[0] not in out_tensors):
        names = ", ".join(sorted({node_label(n) for n, _ in boundary})[:3])
        raise refuse(where, f"its output branches to several consumers ({names}); only a chain is supported")
    if boundary:
        node, t = boundary[0]
        return ordered, t, node
    ends = [n.output[0] for n in ordered if n.output[0] in g.outputs] or ([start] if start in g.outputs else [])
    if not ends:
        raise refuse(where, "its output never reaches a graph output")
    return ordered, ends[-1], None


def _segment(g: SourceGraph, start: str, where: onnx.NodeProto) -> Segment:
    seg = Segment()
    seg.region1, t, node = _region(g, start, where)
    if node is not None and node.op_type in POOL_OPS:
        seg.pool = node
        seg.region2, t, node = _region(g, node.output[0], node)
    seg.end = t
    while node is not None and node.op_type in SHAPE_OPS:
        seg.shape_ops.append(node)
        nxt = _main_consumers(g, node.output[0])
        if node.output[0] in g.outputs or len(nxt) != 1:
            raise refuse(node, "a reshape must feed exactly one Gemm/MatMul")
        t, node = node.output[0], nxt[0]
    if node is not None and node.op_type not in LINEAR_OPS:
        if node.op_type in POOL_OPS:
            raise refuse(node, "a second pooling in one block is not supported")
        if node.op_type in ELEMENTWISE_OPS:
            raise refuse(node, "elementwise ops after a Flatten/Reshape are not supported (apply them before it)")
        hint = None
        if node.op_type in ("Softmax", "LogSoftmax"):
            hint = "export the model without its final softmax (the class is the argmax of the logits)"
        raise refuse(node, f"op type {node.op_type} is not supported", hint=hint)
    if seg.shape_ops and node is not None and node.op_type == "Conv":
        raise refuse(seg.shape_ops[0], "a reshape before a convolution is not supported")
    if seg.shape_ops and node is None:
        raise refuse(seg.shape_ops[0], "a reshape at the output is not supported")
    seg.next_tensor, seg.next_node = t, node
    return seg


def _pair(values: Any, default: int, node: onnx.NodeProto, what: str) -> tuple[int, int]:
    v = list(values) if values is not None else [default, default]
    if len(v) != 2:
        raise refuse(node, f"{what} {v}: only 2-D operations are supported")
    return int(v[0]), int(v[1])


def _pads(attrs: dict[str, Any], node: onnx.NodeProto) -> tuple[int, int]:
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto not in ("NOTSET", "VALID"):
        raise refuse(node, f"auto_pad={auto} is not supported (export with explicit pads)")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4:
        raise refuse(node, f"pads {pads}: only 2-D operations are supported")
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise refuse(node, f"asymmetric pads {pads} are not supported")
    return int(pads[0]), int(pads[1])


def _binary(node: onnx.NodeProto, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights (F, ...) -> (±1, alpha per filter); refuses anything but ±alpha_f."""
    if not np.issubdtype(w.dtype, np.floating) and not np.issubdtype(w.dtype, np.integer):
        raise refuse(node, f"weights of type {w.dtype} are not supported")
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise refuse(node, "weights are not finite")
    mag = np.abs(flat)
    alpha = mag[:, 0].copy()
    for f in range(flat.shape[0]):
        if alpha[f] == 0 or np.any(mag[f] == 0):
            raise refuse(node, f"filter {f} has a zero weight (ternary weights are not supported)")
        odd = np.flatnonzero(mag[f] != alpha[f])
        if odd.size:
            raise refuse(
                node,
                f"weights of filter {f} are not binary: magnitudes {alpha[f]:.6g} and {mag[f, odd[0]]:.6g} "
                "(only ±alpha per output channel is supported)",
            )
    return np.sign(flat).reshape(w.shape), alpha


def _const_input(g: SourceGraph, node: onnx.NodeProto, idx: int, what: str) -> np.ndarray | None:
    if len(node.input) <= idx or not node.input[idx]:
        return None
    name = node.input[idx]
    if not g.is_const(name):
        raise refuse(node, f"its {what} is not a constant")
    return g.value(name)


def _stage(g: SourceGraph, node: onnx.NodeProto, in_shape: tuple[int, ...]) -> Stage:
    a = g.attrs(node)
    if node.op_type == "Conv":
        if a.get("group", 1) != 1:
            raise refuse(node, f"group={a['group']} is not supported")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise refuse(node, f"dilations={list(a['dilations'])} are not supported")
        w = _const_input(g, node, 1, "weight")
        assert w is not None
        if w.ndim != 4:
            raise refuse(node, f"a {w.ndim - 2}-D convolution is not supported (only 2-D)")
        if len(in_shape) != 3 or w.shape[1] != in_shape[0]:
            raise refuse(node, f"weights {list(w.shape)} do not match its input {list(in_shape)}")
        wb, alpha = _binary(node, w)
        b = _const_input(g, node, 2, "bias")
        return Stage(
            node,
            "conv",
            wb,
            alpha,
            np.zeros(w.shape[0]) if b is None else b.astype(np.float64).reshape(-1),
            kernel=(int(w.shape[2]), int(w.shape[3])),
            stride=_pair(a.get("strides"), 1, node, "strides"),
            padding=_pads(a, node),
        )
    n_in = int(np.prod(in_shape))
    if node.op_type == "Gemm":
        if a.get("transA", 0):
            raise refuse(node, "transA=1 is not supported")
        w = _const_input(g, node, 1, "weight")
        assert w is not None
        w = w if a.get("transB", 0) else w.T
        c = _const_input(g, node, 2, "bias")
        gain, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    else:  # MatMul
        w = _const_input(g, node, 1, "weight")
        assert w is not None
        w, c, gain, beta = w.T, None, 1.0, 1.0
    if w.ndim != 2 or w.shape[1] != n_in:
        raise refuse(node, f"weights {list(w.shape)} do not match its flattened input of {n_in} features")
    if gain == 0:
        raise refuse(node, "alpha=0 makes every output constant")
    wb, alpha = _binary(node, w)
    bias = (
        np.zeros(w.shape[0]) if c is None else np.broadcast_to(beta * c.astype(np.float64).reshape(-1), (w.shape[0],))
    )
    return Stage(node, "linear", wb, alpha * gain, np.array(bias, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# evaluating the source's elementwise ops
# ---------------------------------------------------------------------------------------------


def _per_channel(g: SourceGraph, node: onnx.NodeProto, name: str, rank: int) -> np.ndarray:
    """A constant input of an elementwise op as a scalar or per-channel array (axis 1).

    Constants that repeat one value per channel over the spatial axes (``ones_like`` of a
    feature map) are reduced; per-position values are refused.
    """
    value = np.asarray(g.value(name))
    if value.ndim > rank:
        raise refuse(node, f"constant '{name}' {list(value.shape)} has more axes than its input")
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    for axis in [0] + list(range(2, rank)):
        if full.shape[axis] > 1:
            first = np.take(full, [0], axis=axis)
            if not np.array_equal(full, np.broadcast_to(first, full.shape)):
                raise refuse(node, f"constant '{name}' {list(value.shape)} is not per channel (per-position values)")
            full = first
    return full


def _chain_nodes(g: SourceGraph, seg: Segment, rank: int) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """The block's elementwise nodes (MaxPool as Identity) and their constants."""
    nodes = list(seg.region1)
    if seg.pool is not None:
        nodes.append(
            onnx.helper.make_node("Identity", [seg.pool.input[0]], [seg.pool.output[0]], name="pool_as_identity")
        )
    nodes += seg.region2
    consts: dict[str, np.ndarray] = {}
    for n in nodes:
        keep = set(n.input[1:]) if n.op_type in ("BatchNormalization", "MultiThreshold") else set()
        for name in n.input:
            if name and g.is_const(name) and name not in consts:
                consts[name] = np.asarray(g.value(name)) if name in keep else _per_channel(g, n, name, rank)
    return nodes, consts


def _evaluate_chain(g: SourceGraph, stage: Stage, values: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """Run the block's elementwise ops on ``values`` (n, F) -> outputs as (n, F)."""
    feed = values.astype(np.float32)
    if stage.kind == "conv":
        feed = feed[:, :, None, None]
    nodes, consts = _chain_nodes(g, stage.segment, feed.ndim)
    name = stage.node.output[0]
    computed = [o for o in dict.fromkeys(outputs) if o != name]
    found = dict(zip(computed, g.run(nodes, {name: feed}, computed, consts))) if computed else {}
    found[name] = feed
    return [np.asarray(found[o], dtype=np.float64).reshape(len(values), -1) for o in outputs]


def _accumulator_values(stage: Stage, scale: float, offset: np.ndarray, bound: int, accs: np.ndarray) -> np.ndarray:
    """What the source's linear op outputs for integer accumulators ``accs``: (n, F)."""
    v: np.ndarray = np.outer(accs.astype(np.float64), stage.alpha * scale) + (offset + stage.bias)[None, :]
    return v.astype(np.float32)


def _thresholds(
    g: SourceGraph, stage: Stage, scale: float, offset: np.ndarray, bound: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(threshold int32, direction int8, flip bool per channel, output magnitude u)."""
    f = stage.weight.shape[0]
    if (2 * bound + 1) * f > MAX_EVAL_VALUES:
        raise refuse(stage.node, f"its accumulator range x channels ({(2 * bound + 1) * f}) is too large to evaluate")
    accs = np.arange(-bound, bound + 1)
    seg = stage.segment
    outs = [seg.end] + ([seg.pool.input[0]] if seg.pool is not None else [])
    res = _evaluate_chain(g, stage, _accumulator_values(stage, scale, offset, bound, accs), outs)
    table = res[0]
    producer = g.producer.get(seg.end, stage.node)
    u = float(np.max(np.abs(table)))
    if not np.all(np.isfinite(table)):
        raise refuse(producer, "the block's output is not finite for some accumulator values")
    if u == 0 or not np.all(np.abs(table) == u):
        i, c = np.argwhere(np.abs(table) != u)[0] if u else (0, 0)
        values = np.unique(table)
        shown = ", ".join(f"{v:g}" for v in values[:4])
        raise refuse(
            producer,
            f"the block's output is not binary (±u): channel {int(c)} gives {table[i, c]:g} at accumulator "
            f"{int(accs[i])} (values: {shown})",
            hint="every hidden block must end in a sign/bipolar activation; ONNX Sign gives 0 at exactly 0",
        )
    flip = np.zeros(f, bool)
    if seg.pool is not None:
        h = res[1]
        d = np.diff(h, axis=0)
        up, down = np.all(d >= 0, axis=0), np.all(d <= 0, axis=0)
        bad = np.flatnonzero(~up & ~down)
        if bad.size:
            raise refuse(
                seg.pool,
                f"the values it pools in channel {int(bad[0])} are not monotonic in the accumulator, "
                "so the pooled sign has no threshold",
            )
        flip = down & ~up
    s = np.where(table > 0, 1, -1)
    s[:, flip] = s[::-1, flip]  # a decreasing channel pools the minimum: negate its accumulator
    thr = np.zeros(f, np.int64)
    direction = np.ones(f, np.int8)
    for c in range(f):
        col = s[:, c]
        changes = np.flatnonzero(col[1:] != col[:-1]) + 1
        if changes.size == 0:
            thr[c] = -bound if col[0] > 0 else bound + 1
        elif changes.size == 1 and col[0] < 0:
            thr[c] = accs[changes[0]]
        elif changes.size == 1:
            thr[c], direction[c] = accs[changes[0] - 1], -1
        else:
            at = ", ".join(str(int(accs[i])) for i in changes[:4])
            raise refuse(
                producer,
                f"the sign of channel {c} is not monotonic in the accumulator (it changes at {at}); "
                "it cannot be one threshold",
            )
    return thr.astype(np.int32), direction, flip, u


EXIT_EPS = 1e-5  # the exit block's BatchNorm1d epsilon (PyTorch's default)


def _plain_exit_bn(g: SourceGraph, st: Stage, scale: float, offset: np.ndarray) -> dict[str, np.ndarray] | None:
    """The exit's batch norm as it is, when the exit is exactly ±1 weights -> BatchNormalization.

    Taking the statistics themselves (not a fitted affine) keeps the C identical to the model the
    graph was exported from; any other exit is fitted by :func:`_exit_affine`.
    """
    seg = st.segment
    if len(seg.region1) != 1 or seg.pool is not None or seg.region2:
        return None
    node = seg.region1[0]
    if node.op_type != "BatchNormalization" or node.input[0] != st.node.output[0] or len(node.input) != 5:
        return None
    eps = float(g.attrs(node).get("epsilon", 1e-5))
    if abs(eps - EXIT_EPS) > 1e-9 or scale != 1 or np.any(st.alpha != 1) or np.any(st.bias != 0) or np.any(offset != 0):
        return None
    if not all(g.is_const(i) for i in node.input[1:]):
        return None
    values = [np.asarray(g.value(i), np.float64).reshape(-1) for i in node.input[1:]]
    if any(v.size != st.weight.shape[0] for v in values):
        return None
    return dict(zip(("gamma", "beta", "mean", "var"), values))


def _exit_affine(
    g: SourceGraph, stage: Stage, scale: float, offset: np.ndarray, bound: int
) -> tuple[np.ndarray, np.ndarray]:
    """score = A * acc + B per class, checked on the whole accumulator range (or many points)."""
    f = stage.weight.shape[0]
    if (2 * bound + 1) * f <= 1 << 22:
        accs = np.arange(-bound, bound + 1)
    else:
        accs = np.unique(np.concatenate([np.linspace(-bound, bound, 4097).round(), np.arange(-64, 65)])).astype(
            np.int64
        )
    (y,) = _evaluate_chain(g, stage, _accumulator_values(stage, scale, offset, bound, accs), [stage.segment.end])
    i0 = int(np.flatnonzero(accs == 0)[0])
    b0 = y[i0]
    a = (y[-1] - y[0]) / (accs[-1] - accs[0])
    err = np.abs(y - (np.outer(accs, a) + b0))
    tol = 1e-5 * (np.abs(y).max(axis=0) + 1e-6)
    if not np.all(np.isfinite(y)) or np.any(err > tol[None, :]):
        c = int(np.argmax((err / tol[None, :]).max(axis=0)))
        node = g.producer.get(stage.segment.end, stage.node)
        raise refuse(node, f"the scores are not an affine function of the exit's accumulator (class {c})")
    return a, b0


# ---------------------------------------------------------------------------------------------
# the input path
# ---------------------------------------------------------------------------------------------


def _input_affine(
    g: SourceGraph, first: onnx.NodeProto, scale: float, offset: float
) -> tuple[float, np.ndarray, tuple[int, ...]]:
    """The input path as ``q = a * pixel + c[position]`` -> (a, c over the flat input, source input shape)."""
    dims = g.input_dims()
    shape = tuple(1 if not isinstance(d, int) or d == 0 else d for d in dims)
    if shape[0] != 1 and isinstance(dims[0], int):
        raise ImportRefused(
            f"input '{g.inputs[0].name}': batch size {dims[0]} (export with batch 1 or a dynamic batch)"
        )
    n = int(np.prod(shape))
    target = first.input[0]
    nodes = g.ancestors([target])
    for node in nodes:
        if node.op_type not in ELEMENTWISE_OPS | SHAPE_OPS and not all(g.is_const(i) for i in node.input):
            if node.op_type in POOL_OPS:
                raise refuse(node, "pooling the raw input is not supported")
            raise refuse(node, f"op type {node.op_type} is not supported on the input path")
    pos = np.arange(n)
    pixels = (pos[None, :] + np.arange(256)[:, None]) % 256  # every position sees every pixel value
    x = pixels_to_source(pixels.reshape(256, *shape[1:]), scale, offset)
    if nodes:
        consts = {}
        for node in nodes:  # exported reshapes often fix the batch to 1: run all 256 rows at once
            if node.op_type == "Reshape" and g.is_const(node.input[1]):
                target_shape = np.array(g.value(node.input[1]), dtype=np.int64)
                if target_shape.size and target_shape[0] == 1:
                    target_shape[0] = 256
                consts[node.input[1]] = target_shape
        kept = [nd for nd in nodes if not any(o in consts for o in nd.output)]
        (out,) = g.run(kept, {g.inputs[0].name: x}, [target], consts)
    else:
        out = x
    if out.size != 256 * n:
        raise refuse(first, f"its input has {out.size // 256} values, the model's input {n}")
    q = np.empty((256, n))
    q[pixels, pos[None, :]] = out.reshape(256, n)
    p = np.arange(256, dtype=np.float64)
    a_pos = (q[255] - q[0]) / 255.0
    a = float(np.median(a_pos))
    c = q[0]
    err = np.abs(q - (c[None, :] + a * p[:, None]))
    tol = 1e-6 * (np.abs(q).max() + 1e-12)
    culprit = g.producer.get(target, first)
    if a == 0 or np.any(np.abs(a_pos - a) > 1e-6 * abs(a) + tol) or np.any(err > tol):
        k = int(np.argmax(err.max(axis=0)))
        i = int(np.argmax(err[:, k]))
        raise refuse(
            culprit,
            f"the input path is not an affine function of the uint8 pixel for x = {scale:g} * pixel + {offset:g} "
            f"(pixel {i} gives {q[i, k]:.6g}, the line through pixels 0 and 255 {c[k] + a * i:.6g})",
            hint="choose --input-scale/--input-offset so that every pixel lands on the input quantizer's grid",
        )
    return a, c, shape


def _our_input_shape(
    source_shape: tuple[int, ...], first_kind: str, n: int, node: onnx.NodeProto
) -> tuple[int, int, int]:
    if len(source_shape) == 4:
        c, h, w = source_shape[1:]
        if c <= MAX_INPUT_CHANNELS and h <= MAX_SPATIAL and w <= MAX_SPATIAL:
            return int(c), int(h), int(w)
    if first_kind == "conv":
        raise refuse(node, f"its input shape {list(source_shape)} is not supported (C<=64, H,W<=1024)")
    for c in range(1, MAX_INPUT_CHANNELS + 1):
        if n % c == 0 and n // c <= MAX_SPATIAL:
            return c, 1, n // c
    raise refuse(node, f"an input of {n} features is too large")


# ---------------------------------------------------------------------------------------------
# the importer
# ---------------------------------------------------------------------------------------------


def _name_from(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", path.stem).strip("_") or "model"
    if not re.match(r"[A-Za-z]", name):
        name = "m_" + name
    return name[:40]


def _pool_entry(g: SourceGraph, node: onnx.NodeProto) -> dict[str, Any]:
    a = g.attrs(node)
    if a.get("ceil_mode", 0):
        raise refuse(node, "ceil_mode=1 is not supported")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise refuse(node, f"dilations={list(a['dilations'])} are not supported")
    k = _pair(a.get("kernel_shape"), 1, node, "kernel_shape")
    s = _pair(a.get("strides"), 1, node, "strides")
    p = _pads(a, node)
    if len(node.output) > 1 and node.output[1]:
        raise refuse(node, "the Indices output is not supported")
    return {"kernel": list(k), "stride": list(s), "padding": list(p)}


def import_onnx(
    path: str | os.PathLike[str],
    *,
    input_scale: float = 1.0,
    input_offset: float = 0.0,
    name: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ImportResult:
    """Import an ONNX or QONNX file; returns the device section and per-block notes.

    Raises :class:`ImportRefused` (exit 2) naming the node it cannot represent exactly.
    """
    p = Path(path)
    if not (np.isfinite(input_scale) and np.isfinite(input_offset)) or input_scale == 0:
        raise ImportRefused(
            f"--input-scale must be finite and non-zero, --input-offset finite (got {input_scale}, {input_offset})"
        )
    g = SourceGraph(load_onnx(p))
    if len(g.inputs) != 1:
        raise ImportRefused(f"{p}: the graph has {len(g.inputs)} inputs; exactly one is supported")
    if len(g.outputs) != 1:
        raise ImportRefused(f"{p}: the graph has {len(g.outputs)} outputs; exactly one (the scores) is supported")

    # locate the first linear op: the input path is everything before it
    first_nodes = [n for n in g.graph.node if n.op_type in LINEAR_OPS and not g.is_const(n.input[0])]
    if not first_nodes:
        raise ImportRefused(f"{p}: no Conv, Gemm or MatMul on a non-constant input")
    first = first_nodes[0]
    a_in, c_in, src_shape = _input_affine(g, first, input_scale, input_offset)
    n_in = int(np.prod(src_shape))

    stages: list[Stage] = []
    node: onnx.NodeProto | None = first
    first_kind = "conv" if first.op_type == "Conv" else "linear"
    our_in = _our_input_shape(src_shape, first_kind, n_in, first)
    cur: tuple[int, ...] = our_in
    while node is not None:
        if stages and stages[-1].kind == "linear" and node.op_type == "Conv":
            raise refuse(node, "a convolution after a fully connected layer is not supported")
        stage = _stage(g, node, cur)
        stage.segment = _segment(g, node.output[0], node)
        if stage.segment.shape_ops and stage.kind == "conv" and stage.segment.next_node is None:
            raise refuse(stage.segment.shape_ops[0], "a reshape at the output is not supported")
        stages.append(stage)
        if stage.kind == "conv":
            cur = _conv_out_shape(stage, cur)
            if stage.segment.pool is not None:
                pe = _pool_entry(g, stage.segment.pool)
                cur = (cur[0], (cur[1] + 2 * pe["padding"][0] - pe["kernel"][0]) // pe["stride"][0] + 1,
                       (cur[2] + 2 * pe["padding"][1] - pe["kernel"][1]) // pe["stride"][1] + 1)  # fmt: skip
        else:
            if stage.segment.pool is not None:
                raise refuse(stage.segment.pool, "pooling after a fully connected layer is not supported")
            cur = (stage.weight.shape[0],)
        node = stage.segment.next_node
    if len(stages) < 2:
        raise refuse(first, "the model has a single layer: nothing to binarise before the exit")
    exit_stage = stages[-1]
    if exit_stage.kind == "conv":
        raise refuse(exit_stage.node, "the last layer must be a Gemm/MatMul (the exit), not a convolution")
    if exit_stage.segment.pool is not None:
        raise refuse(exit_stage.segment.pool, "pooling after the exit layer is not supported")

    layers: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    scale_in = a_in
    for i, st in enumerate(stages):
        is_exit = i == len(stages) - 1
        f = st.weight.shape[0]
        if i == 0:
            w_full = st.weight if st.kind == "conv" else st.weight.reshape(f, *our_in)
            c_full = c_in.reshape(our_in)
            if st.kind == "conv":
                c_ch = c_full.reshape(our_in[0], -1)
                if not np.all(c_ch == c_ch[:, :1]):
                    raise refuse(
                        st.node, "the input path adds a per-position offset; only per-channel offsets are supported"
                    )
                if np.any(c_ch != 0) and (st.padding[0] or st.padding[1]):
                    raise refuse(
                        st.node,
                        "padding with an input offset is not exact (the source pads with 0, not with a pixel value)",
                        hint="use --input-offset 0 or a model without padding in its first convolution",
                    )
                offset = st.alpha * np.einsum("fchw,c->f", w_full, c_ch[:, 0])
                bound = 255 * int(np.prod(w_full.shape[1:]))
            else:
                offset = st.alpha * (w_full.reshape(f, -1) @ c_full.reshape(-1))
                bound = 255 * n_in
        else:
            offset = np.zeros(f)
            bound = int(np.prod(st.weight.shape[1:]))
        if is_exit:
            layers.append({"type": "exit", "classes": int(f)})
            bn = _plain_exit_bn(g, st, scale_in, offset)
            if bn is not None:
                values["exit"] = (st.weight, bn)
            else:
                a, b = _exit_affine(g, st, scale_in, offset, bound)
                values["exit"] = (st.weight, {"gamma": a * np.sqrt(1.0 + EXIT_EPS), "beta": b, "mean": 0.0, "var": 1.0})
            notes.append({"node": st.node.name, "op": st.node.op_type, "type": "exit", "scores": st.segment.end})
            break
        thr, direction, flip, u = _thresholds(g, st, scale_in, offset, bound)
        w = st.weight.copy()
        w[flip] = -w[flip]
        kind = ("conv" if i == 0 else "bconv") if st.kind == "conv" else "blinear"
        if i == 0 and st.kind == "linear":
            kind = "conv"
        entry: dict[str, Any]
        if kind in ("conv", "bconv") and st.kind == "conv":
            entry = {"type": kind, "out_channels": int(f), "kernel": list(st.kernel), "stride": list(st.stride),
                     "padding": list(st.padding)}  # fmt: skip
            if st.segment.pool is not None:
                entry["pool"] = _pool_entry(g, st.segment.pool)
        elif kind == "conv":  # a fully connected first layer: a convolution covering the input
            entry = {"type": "conv", "out_channels": int(f), "kernel": [our_in[1], our_in[2]]}
        else:
            entry = {"type": "blinear", "out_features": int(f)}
        entry["threshold"] = True
        layers.append(entry)
        values[f"block{i}"] = (w, thr, direction)
        notes.append(
            {
                "node": st.node.name,
                "op": st.node.op_type,
                "type": kind,
                "output": st.segment.end,
                "pool": None
                if st.segment.pool is None
                else ("after sign" if not st.segment.region2 else "before sign"),
                "flipped_channels": int(flip.sum()),
                "magnitude": u,
            }  # fmt: skip
        )
        scale_in = u
    model_name = name or _name_from(p)
    config = {
        "name": model_name,
        "input": list(our_in),
        "layers": layers,
        "meta": {
            "import": {
                "source": p.name,
                "sha256": file_sha256(p),
                "format": "qonnx" if g.is_qonnx else "onnx",
                "input_name": g.inputs[0].name,
                "input_shape": [int(d) for d in src_shape],
                "input_scale": float(input_scale),
                "input_offset": float(input_offset),
                "block_outputs": [n["output"] for n in notes if "output" in n],
                "scores": notes[-1]["scores"],
            }
        },
    }
    try:
        parse_config(config)
    except ConfigError as exc:
        raise ImportRefused(
            f"{p}: the imported network does not fit ebnn-codegen: {exc.message}", hint=exc.hint
        ) from None
    model = DeviceSection(config)
    _load_values(model, values)
    return ImportResult(model.eval(), "qonnx" if g.is_qonnx else "onnx", notes)


def _conv_out_shape(st: Stage, cur: tuple[int, ...]) -> tuple[int, int, int]:
    h = (cur[1] + 2 * st.padding[0] - st.kernel[0]) // st.stride[0] + 1
    w = (cur[2] + 2 * st.padding[1] - st.kernel[1]) // st.stride[1] + 1
    if h < 1 or w < 1:
        raise refuse(st.node, f"its kernel {list(st.kernel)} is larger than its padded input {list(cur)}")
    return (st.weight.shape[0], h, w)


@torch.no_grad()
def _load_values(model: Any, values: dict[str, Any]) -> None:  # a DeviceSection (nn.Module attributes are untyped)
    for i, block in enumerate(model.blocks):
        w, thr, direction = values[f"block{i}"]
        layer = block.conv if hasattr(block, "conv") else block.linear
        layer.weight.copy_(torch.from_numpy(w.reshape(layer.weight.shape)).float())
        block.act.threshold.copy_(torch.from_numpy(thr))
        block.act.direction.copy_(torch.from_numpy(direction))
    w, bn = values["exit"]
    ex = model.exit
    assert float(ex.bn.eps) == EXIT_EPS
    ex.linear.weight.copy_(torch.from_numpy(w.reshape(ex.linear.weight.shape)).float())
    for key, param in (
        ("gamma", ex.bn.weight),
        ("beta", ex.bn.bias),
        ("mean", ex.bn.running_mean),
        ("var", ex.bn.running_var),
    ):
        param.copy_(torch.from_numpy(np.broadcast_to(np.asarray(bn[key], np.float64), param.shape).copy()).float())
