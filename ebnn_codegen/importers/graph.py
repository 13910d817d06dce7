"""An ONNX or QONNX graph as the importer sees it, and the source's own runtime.

:class:`SourceGraph` indexes producers, consumers and constants, and runs any
part of the graph with the runtime that owns it: onnxruntime for plain ONNX
(graph optimisations off, so every node computes what the graph says) and
qonnx's executor for QONNX (custom ``Quant``/``BipolarQuant``/``MultiThreshold``
nodes).  Nothing here knows about ebnn-codegen's blocks.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ConfigError

QONNX_OPS = frozenset({"Quant", "BipolarQuant", "MultiThreshold", "Trunc", "IntQuant", "FloatQuant"})


class ImportRefused(ConfigError):
    """The source graph holds something the importer cannot represent exactly (exit 2)."""


def node_label(node: onnx.NodeProto) -> str:
    name = node.name or (node.output[0] if node.output else "?")
    return f'node "{name}" ({node.op_type})'


def refuse(node: onnx.NodeProto, reason: str, hint: str | None = None) -> ImportRefused:
    return ImportRefused(f"{node_label(node)}: {reason}", hint=hint)


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX file, turning every failure into one ImportRefused line."""
    p = Path(path)
    if not p.is_file():
        raise ImportRefused(f"{p}: no such file" if not p.exists() else f"{p}: is not a file")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf raises several types for damaged files
        raise ImportRefused(
            f"{p}: not a readable ONNX model ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})"
        ) from None
    if not model.graph.node:
        raise ImportRefused(f"{p}: the ONNX graph has no nodes")
    return model


class SourceGraph:
    """Index of one ONNX graph: producers, consumers, constants; runs sub-graphs."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.order: dict[int, int] = {}
        for i, node in enumerate(self.graph.node):
            self.order[id(node)] = i
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)
        self.is_qonnx = any(n.op_type in QONNX_OPS and n.domain not in ("", "ai.onnx") for n in self.graph.node)
        self.inputs = [i for i in self.graph.input if i.name not in self.inits]
        self.outputs = [o.name for o in self.graph.output]
        self._const: dict[str, bool] = {}
        self._values: dict[str, np.ndarray] = {}

    # ---- structure -------------------------------------------------------------------------
    def is_const(self, name: str) -> bool:
        """True for initializers, Constant outputs and anything computed from constants only."""
        if not name or name in self.inits:
            return True
        if name in self._const:
            return self._const[name]
        node = self.producer.get(name)
        self._const[name] = False  # cycles cannot occur in a valid graph; guards recursion
        result = node is not None and all(self.is_const(i) for i in node.input)
        self._const[name] = result
        return result

    def ancestors(self, names: list[str]) -> list[onnx.NodeProto]:
        """The nodes that compute ``names``, in graph order."""
        seen: dict[int, onnx.NodeProto] = {}
        stack = [n for n in names if n]
        while stack:
            node = self.producer.get(stack.pop())
            if node is None or id(node) in seen:
                continue
            seen[id(node)] = node
            stack.extend(i for i in node.input if i)
        return sorted(seen.values(), key=lambda n: self.order[id(n)])

    def value(self, name: str) -> np.ndarray:
        """The value of a constant tensor (evaluated by the source's runtime if computed)."""
        if name not in self._values:
            if name in self.inits:
                self._values[name] = numpy_helper.to_array(self.inits[name])
            else:
                (self._values[name],) = self.run(self.ancestors([name]), {}, [name])
        return self._values[name]

    def attrs(self, node: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def input_dims(self) -> list[int | str]:
        (inp,) = self.inputs
        dims: list[int | str] = []
        for d in inp.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
        return dims

    # ---- running ---------------------------------------------------------------------------
    def submodel(
        self,
        nodes: list[onnx.NodeProto],
        feeds: dict[str, np.ndarray],
        outputs: list[str],
        consts: dict[str, np.ndarray] | None = None,
    ) -> onnx.ModelProto:
        consts = consts or {}
        used = {i for n in nodes for i in n.input if i}
        inits = [self.inits[n] for n in sorted(used) if n in self.inits and n not in feeds and n not in consts]
        inits += [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
        inputs = [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
            for k, v in feeds.items()
        ]
        outs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs]
        g = helper.make_graph(list(nodes), "ebnn_import_part", inputs, outs, initializer=inits)
        m = helper.make_model(g, opset_imports=list(self.model.opset_import))
        m.ir_version = self.model.ir_version
        return m

    def run(
        self,
        nodes: list[onnx.NodeProto],
        feeds: dict[str, np.ndarray],
        outputs: list[str],
        consts: dict[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Run ``nodes`` on ``feeds`` with the source's runtime and return ``outputs``.

        ``consts`` replace constant inputs (their producers must then not be in ``nodes``).
        """
        return run_model(self.submodel(nodes, feeds, outputs, consts), feeds, outputs, self.is_qonnx)


def run_model(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str], qonnx: bool
) -> list[np.ndarray]:
    """One execution of ``model`` by onnxruntime (optimisations off) or by qonnx's executor."""
    if qonnx:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_shapes import InferShapes

        wrapped = ModelWrapper(model)
        del wrapped.graph.output[:]
        for o in outputs:
            wrapped.graph.output.append(helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
        wrapped = wrapped.transform(InferShapes())
        ctx = execute_onnx(wrapped, dict(feeds), return_full_exec_context=True)
        return [np.asarray(ctx[o]) for o in outputs]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in sess.run(outputs, dict(feeds))]


class SourceRunner:
    """The whole source model, with chosen intermediate tensors as extra outputs.

    Runs a batch at once when the input's batch dimension is symbolic, else one
    sample at a time (exported models often fix the batch to 1 in their reshapes).
    """

    def __init__(self, source: SourceGraph, outputs: list[str]) -> None:
        self.source = source
        self.outputs = outputs
        m = onnx.ModelProto()
        m.CopyFrom(source.model)
        known = {o.name for o in m.graph.output}
        for name in outputs:
            if name not in known:
                m.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        self.model = m
        self.input_name = source.inputs[0].name
        dims = source.input_dims()
        self.batched = bool(dims) and not isinstance(dims[0], int)
        self._session: Any = None
        self._wrapped: Any = None

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if self.batched:
            return self._one(x)
        parts = [self._one(x[i : i + 1]) for i in range(len(x))]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.outputs))]

    def _one(self, x: np.ndarray) -> list[np.ndarray]:
        if self.source.is_qonnx:
            from qonnx.core.modelwrapper import ModelWrapper
            from qonnx.core.onnx_exec import execute_onnx
            from qonnx.transformation.infer_shapes import InferShapes

            if self._wrapped is None:  # the full execution context holds every tensor: no extra outputs
                self._wrapped = ModelWrapper(self.source.model).transform(InferShapes())
            ctx = execute_onnx(self._wrapped, {self.input_name: x}, return_full_exec_context=True)
            return [np.asarray(ctx[o]) for o in self.outputs]
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(
                self.model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        return [np.asarray(v) for v in self._session.run(self.outputs, {self.input_name: x})]
