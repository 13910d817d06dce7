"""The compiler driver: named stages from a torch model to C files.

``step_lower`` (torch -> IR), ``step_fold`` (BN + sign -> thresholds, exit BN
-> fixed point), ``step_pack`` (weights -> bytes), ``step_plan`` (buffers),
``step_render`` (IR -> C).  The stages are the one list :data:`ebnn_codegen.passes.STAGES`;
the IR is validated (:func:`ebnn_codegen.ir_check.validate`) after lowering and after every pass.  Each stage prints ``[n/N] name`` when a log
function is given, and the IR can be saved after every stage for inspection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import codegen
from . import ir as ir_mod
from .ir_check import validate
from .lower import lower
from .passes import STAGES, run_passes

Log = Callable[[str], None]


def compile_model(
    model: torch.nn.Module,
    *,
    name: str | None = None,
    log: Log | None = None,
    save_ir: str | Path | None = None,
) -> ir_mod.Model:
    """Lower a device section and run the pass pipeline; returns the final IR."""
    total = len(STAGES) + 1
    if name is not None:  # refuse a bad name before the (slow) lowering
        from .config import check_identifier

        check_identifier(name, "--name")
    if log:
        log(f"[1/{total}] step_lower: torch -> IR")
    graph = lower(model)
    if name is not None:
        graph.name = name
    validate(graph)
    if save_ir is not None:
        ir_mod.save(graph, Path(save_ir) / "0_lower")
    for n, stage in enumerate(STAGES, start=2):
        if log:
            log(f"[{n}/{total}] {stage.name}: " + ", ".join(type(p).__name__ for p in stage.passes))
        graph = run_passes(graph, stage.passes)
        if save_ir is not None:
            ir_mod.save(graph, Path(save_ir) / f"{n - 1}_{stage.name[5:]}")
    return graph


def render(graph: ir_mod.Model, kernels: str = "fast", options: dict[str, Any] | None = None) -> dict[str, str]:
    """``step_render``: the C files of a compiled IR, {filename: text}."""
    return codegen.render_model(graph, kernels, options)
