"""The cost model of the IR: per-block binary MACs, model constants and buffers.

Pure arithmetic on a compiled :class:`~ebnn_codegen.ir.Model`; no toolchain.  The
numbers are what the generated C declares (weights, thresholds, exit affine, the static
workspace); code size, the popcount table and the stack are measured per target
(:mod:`ebnn_codegen.targets`), which use this module for predictions and for naming the
largest part of a model that does not fit.
"""

from __future__ import annotations

from typing import Any

from .ir import Model


def report(graph: Model) -> dict[str, Any]:
    """Per-block MACs and memory, before touching a board (numbers computed from the IR)."""
    plan = graph.plan  # a clear error before the pass pipeline ran
    blocks: list[dict[str, Any]] = []
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
    flash = sum(int(e["weight_bytes"]) + int(e["threshold_bytes"]) for e in blocks)
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
            "static_ram_bytes": plan.workspace_bytes,
            "workspace_bytes": plan.workspace_bytes,
            "trace_bytes": plan.trace_bytes,
            "input_bytes": graph.input_bytes,
        },
        "notes": "flash_bytes counts model constants (weights, thresholds, exit affine) only; "
        "code size and the 256-byte popcount table are measured per target by `report --target`",
    }


def flash_parts(graph: Model) -> list[tuple[str, int]]:
    """The model's constants, part by part: ("block 2 weights", 25088), ..."""
    parts = []
    for b in report(graph)["blocks"]:
        if b["weight_bytes"]:
            parts.append((f"block {b['index']} weights", int(b["weight_bytes"])))
        parts.append((f"block {b['index']} thresholds", int(b["threshold_bytes"])))
    return parts
