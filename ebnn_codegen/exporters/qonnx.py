"""``export --format qonnx``: an ebnn-codegen model as a QONNX graph (FINN, hls4ml, qonnx).

Per hidden block, from the compiled IR (so the graph computes what the C computes)::

    Conv (weights: BipolarQuant of ±1) -> [MaxPool] -> BatchNormalization -> BipolarQuant

The batch norm holds the integer threshold exactly: ``gamma = +1`` (``acc >= t``: mean ``t``) or
``-1`` (``acc <= t``: mean ``t``), variance 1, epsilon 0, so ``BipolarQuant`` (``x >= 0 -> +1``)
gives the block's bit; constant channels have gamma 0 and beta ±1.  Linear blocks are
``Flatten -> Gemm``; the exit is ``Gemm -> BatchNormalization`` with the trained statistics.
The input is the uint8 pixels as float (annotated UINT8).  The graph passes qonnx's cleanup
and shape inference, and qonnx's executor reproduces the C bit for bit (``verify --against``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CodegenError
from ..ir import CONST, LE, Model

if TYPE_CHECKING:
    import onnx  # the optional `import` extra: build_qonnx imports it at run time

OPSET = 13


def build_qonnx(graph: Model) -> onnx.ModelProto:
    """The compiled IR -> an onnx.ModelProto in QONNX form (not yet cleaned up)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    c, h, w = graph.input_shape
    nodes, inits = [], [const("one", np.array(1.0))]
    cur, spatial = "x", True
    for b in graph.blocks:
        i = b.index
        wq = f"b{i}_wq"
        inits.append(const(f"b{i}_w", b.weights.astype(np.float32)))
        if b.kind in ("conv", "bconv"):
            nodes.append(
                helper.make_node(
                    "BipolarQuant", [f"b{i}_w", "one"], [wq], name=f"b{i}_WeightQuant", domain="qonnx.custom_op.general"
                )
            )
            nodes.append(
                helper.make_node(
                    "Conv", [cur, wq], [f"b{i}_acc"], name=f"b{i}_Conv", kernel_shape=list(b.kernel),
                    strides=list(b.stride), pads=[b.padding[0], b.padding[1], b.padding[0], b.padding[1]],
                )
            )  # fmt: skip
            acc = f"b{i}_acc"
            if b.pool is not None:
                p = b.pool
                nodes.append(
                    helper.make_node(
                        "MaxPool", [acc], [f"b{i}_pool"], name=f"b{i}_MaxPool", kernel_shape=list(p.kernel),
                        strides=list(p.stride), pads=[p.padding[0], p.padding[1], p.padding[0], p.padding[1]],
                    )
                )  # fmt: skip
                acc = f"b{i}_pool"
        else:
            if spatial:
                nodes.append(helper.make_node("Flatten", [cur], [f"b{i}_flat"], name=f"b{i}_Flatten", axis=1))
                cur, spatial = f"b{i}_flat", False
            inits[-1] = const(f"b{i}_w", b.weights.reshape(b.out_channels, -1).astype(np.float32))
            nodes.append(
                helper.make_node(
                    "BipolarQuant", [f"b{i}_w", "one"], [wq], name=f"b{i}_WeightQuant", domain="qonnx.custom_op.general"
                )
            )
            nodes.append(helper.make_node("Gemm", [cur, wq], [f"b{i}_acc"], name=f"b{i}_Gemm", transB=1))
            acc = f"b{i}_acc"
        out = f"b{i}_bn"
        if b.is_exit:
            bn = b.bn
            inits += [const(f"b{i}_{k}", bn[k]) for k in ("gamma", "beta", "mean", "var")]
            nodes.append(
                helper.make_node(
                    "BatchNormalization", [acc, f"b{i}_gamma", f"b{i}_beta", f"b{i}_mean", f"b{i}_var"], ["scores"],
                    name=f"b{i}_BatchNorm", epsilon=float(bn["eps"]),
                )
            )  # fmt: skip
            break
        fold = b.folded
        gamma = np.where(fold.direction == LE, -1.0, 1.0)
        gamma[fold.direction == CONST] = 0.0
        beta = np.where(fold.direction == CONST, fold.constant.astype(np.float64), 0.0)
        mean = np.where(fold.direction == CONST, 0.0, fold.threshold.astype(np.float64))
        if np.any(np.abs(mean) >= 2**24):
            raise CodegenError(f"block {i}: a threshold is too large for float32")
        f = b.out_channels
        inits += [
            const(f"b{i}_gamma", gamma),
            const(f"b{i}_beta", beta),
            const(f"b{i}_mean", mean),
            const(f"b{i}_var", np.ones(f)),
        ]
        nodes.append(
            helper.make_node(
                "BatchNormalization", [acc, f"b{i}_gamma", f"b{i}_beta", f"b{i}_mean", f"b{i}_var"], [out],
                name=f"b{i}_Threshold", epsilon=0.0,
            )
        )  # fmt: skip
        nodes.append(
            helper.make_node(
                "BipolarQuant", [out, "one"], [f"b{i}_out"], name=f"b{i}_Sign", domain="qonnx.custom_op.general"
            )
        )
        cur = f"b{i}_out"
    g = helper.make_graph(
        nodes,
        graph.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, graph.num_classes])],
        initializer=inits,
    )
    model = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("qonnx.custom_op.general", 1)],
        producer_name="ebnn-codegen",
    )
    model.ir_version = 8
    return model


def export_qonnx(graph: Model, outdir: str | os.PathLike[str]) -> list[Path]:
    """Write ``outdir/<name>.onnx``: cleaned up and shape-inferred by qonnx. Returns the paths written."""
    try:
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes
        from qonnx.util.cleanup import cleanup_model
    except ImportError:
        raise CodegenError("export --format qonnx needs qonnx", hint='pip install "ebnn-codegen[import]"') from None
    from ..codegen import write_files

    model = ModelWrapper(build_qonnx(graph))
    model = cleanup_model(model)
    model = model.transform(InferShapes())
    model.set_tensor_datatype("x", DataType["UINT8"])
    import onnx

    onnx.checker.check_model(model.model)
    data = model.model.SerializeToString()
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise CodegenError(f"{out}: exists and is not a directory")
    return write_files({f"{graph.name}.onnx": data}, out)
