"""C for a DDNN: every device section, the message codec and the gateway's local exit.

``export_ddnn(model, outdir)`` writes::

    devices/<name>_dev<d>.{c,h}      one section per device (one if weights are shared)
    devices/ebnn_runtime.{c,h}       the core runtime
    devices/<name>_messages.{c,h}    encode a device's scores / feature map as a message
    gateway/<name>_messages.{c,h}    the same codec (the gateway decodes)
    gateway/<name>_gateway.{c,h}     local aggregator + exit decision

The gateway aggregates the message integers in int32 and uses float (single
precision, ``expf``/``logf``) only for the real-unit scores and the
normalised entropy of the exit decision (see :mod:`.exits`).  The edge and
cloud sections stay in PyTorch (they run on machines with an FPU).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import codegen
from ..errors import LoweringError
from .exits import LocalGateway
from .messages import REASONS, message_layout
from .model import DDNN

# The C codes of the message errors; the reasons are messages.REASONS, plus NULL.
MSG_ERRORS = (
    codegen.ErrorCode("TYPE", -1, "not the expected message type"),
    codegen.ErrorCode("SENDER", -2, "unknown sender id"),
    codegen.ErrorCode("LENGTH", -3, "wrong message length"),
    codegen.ErrorCode("VALUE", -4, "reserved score value"),
    codegen.ErrorCode("PADDING", -5, "unused feature bits are not 0"),
    codegen.ErrorCode("NULL", -6, "a required pointer argument is NULL"),
)
assert [e.macro.lower() for e in MSG_ERRORS[:-1]] == list(REASONS)
MAX_LEFT_SHIFT = 32


def _float(v: float) -> str:
    text = f"{float(np.float32(v)):.9g}"
    if "e" not in text and "." not in text and "inf" not in text and "nan" not in text:
        text += ".0"
    return text + "f"


def score_shifts(model: DDNN, graphs: dict[int, Any]) -> list[int]:
    m = model.calibration.frac_bits()
    shifts = []
    for d in range(model.num_devices):
        g = graphs[0 if model.spec.share_weights else d]
        sh = int(g.score_scale_log2) - m
        if not -MAX_LEFT_SHIFT <= sh <= 62:
            raise LoweringError(
                f"device {d}: score scale 2^{g.score_scale_log2} is too far from the message scale 2^{m}"
            )
        shifts.append(sh)
    return shifts


def context(model: DDNN, graphs: dict[int, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the ddnn_* templates print, computed here."""
    gw = LocalGateway(model)
    layout = message_layout(model)
    c, h, w = model.spec.feature_shape
    nbits = c * h * w
    name = model.name
    agg = model.spec.local_aggregator
    texts = {
        "max": "MP, the element-wise maximum of the devices' scores",
        "avg": "AP, the element-wise mean of the devices' scores",
        "concat": "CC, the concatenated scores through a binary linear layer and batch norm",
    }
    ctx: dict[str, Any] = {
        "name": name,
        "NAME": name.upper(),
        "prov": codegen.provenance(None, {"model": name, **(options or {})}),
        "devices": model.num_devices,
        "senders": len(layout.feature_shapes),
        "classes": model.num_classes,
        "score_bits": layout.score_bits,
        "score_type": "int8_t" if layout.score_bits == 8 else "int16_t",
        "qmax": layout.qmax,
        "qmin_reserved": -layout.qmax - 1,
        "frac_bits": layout.score_frac_bits,
        "scores_bytes": layout.scores_bytes(),
        "features_bytes": layout.features_bytes(0),
        "feature_shape": (c, h, w),
        "feature_block": model.spec.feature_block,
        "cb": (c + 7) // 8,
        "pad_mask": f"0x{(0xFF << (nbits % 8)) & 0xFF:02x}" if nbits % 8 else "",
        "msg_errors": MSG_ERRORS,
        "shifts": [str(s) for s in score_shifts(model, graphs)],
        "agg_max": agg == "max",
        "agg_avg": agg == "avg",
        "agg_concat": agg == "concat",
        "aggregator_text": texts[agg],
        "units_note": " (CC: batch-norm affine)" if agg == "concat" else "",
        "score_modulus": 2**layout.score_bits,
        "score_one_byte": layout.score_bits == 8,
        "threshold": _float(model.calibration.threshold("local"))[:-1],
        "inv_log_k": _float(1.0 / math.log(model.num_classes))[:-1],
        "scale": _float(2.0**-gw.frac_bits)[:-1],
    }
    if agg == "concat":
        assert gw.weights is not None
        ctx["cc_rows"] = [", ".join(str(int(v)) for v in row) for row in gw.weights]
        ctx["cc_a"] = [_float(v) for v in gw.a]
        ctx["cc_b"] = [_float(v) for v in gw.b]
    return ctx


def render_messages_and_gateway(
    model: DDNN, graphs: dict[int, Any], options: dict[str, Any] | None = None
) -> dict[str, str]:
    ctx = context(model, graphs, options)
    env = codegen.environment()
    name = model.name
    return {
        f"{name}_messages.h": env.get_template("ddnn_messages.h.j2").render(ctx),
        f"{name}_messages.c": env.get_template("ddnn_messages.c.j2").render(ctx),
        f"{name}_gateway.h": env.get_template("ddnn_gateway.h.j2").render(ctx),
        f"{name}_gateway.c": env.get_template("ddnn_gateway.c.j2").render(ctx),
    }


def compile_devices(model: DDNN, log=None) -> dict[int, Any]:
    """The IR of every distinct device section (key 0 only when weights are shared)."""
    from ..api import compile as compile_section

    keys = [0] if model.spec.share_weights else list(range(model.num_devices))
    graphs = {}
    for d in keys:
        if log:
            log(f"device section {d}: {model.device(d).name}")
        graphs[d] = compile_section(model.device(d))
    return graphs


def render_ddnn(model: DDNN, kernels: str = "fast", target: str | None = None, log=None) -> dict[str, str]:
    """All files of the export, {relative path: text}."""
    from .. import api

    if target is not None:
        api.require_target(target)  # an unknown name fails here, before any work
    graphs = compile_devices(model, log)
    if target is not None:
        for g in graphs.values():
            api.check_fits(g, target, kernels=kernels)
    files: dict[str, str] = {}
    for g in graphs.values():
        for fname, text in codegen.render_model(g, kernels).items():
            files[f"devices/{fname}"] = text
    mg = render_messages_and_gateway(model, graphs, {"kernels": kernels})
    name = model.name
    for fname in (f"{name}_messages.h", f"{name}_messages.c"):
        files[f"devices/{fname}"] = mg[fname]
        files[f"gateway/{fname}"] = mg[fname]
    for fname in (f"{name}_gateway.h", f"{name}_gateway.c"):
        files[f"gateway/{fname}"] = mg[fname]
    return files


def export_ddnn(
    model: DDNN, outdir: str | os.PathLike, *, kernels: str = "fast", target: str | None = None, log=None
) -> list[Path]:
    files = render_ddnn(model, kernels, target, log)
    if log:
        log(f"[render] {len(files)} files -> {outdir}")
    return codegen.write_files(files, outdir)


def build_gateway(model: DDNN, graphs: dict[int, Any] | None = None, cc: str = "cc"):
    """Compile the messages + gateway C into a shared library; returns (ffi, lib) (cffi ABI mode)."""
    import cffi

    from ..targets.toolchain import build_c

    graphs = graphs or compile_devices(model)
    files = render_messages_and_gateway(model, graphs)
    name = model.name
    sources = [f"{name}_messages.c", f"{name}_gateway.c"]
    flags = ["-O2", "-shared", "-fPIC"]
    lib_path = build_c("ddnn", files, sources, f"lib{name}_gateway.so", flags, cc, ["-lm"], "the gateway C")
    score_t = "int8_t" if model.config["messages"]["score_bits"] == 8 else "int16_t"
    ffi = cffi.FFI()
    ffi.cdef(
        f"""
        typedef {score_t} score_t;
        typedef struct {{ int pred; int exit; int count; float eta; }} local_result_t;
        int {name}_encode_scores(int device, const int32_t *scores, uint16_t seq, uint8_t *out);
        int {name}_encode_features(int device, const uint8_t *packed, uint16_t seq, uint8_t *out);
        int {name}_decode_scores(const uint8_t *msg, size_t len, int *device, uint16_t *seq, score_t *q);
        int {name}_check_features(const uint8_t *msg, size_t len, int *device, uint16_t *seq);
        int {name}_local_aggregate(const score_t *q, const uint8_t *present, int32_t *agg);
        int {name}_local_exit(const score_t *q, const uint8_t *present, float threshold, local_result_t *result);
        """
    )
    return ffi, ffi.dlopen(str(lib_path))
