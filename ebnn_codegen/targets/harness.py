"""The generated glue of the microcontroller harnesses (``firmware/*/harness.c``).

A harness main is C in ``firmware/``; per model it includes ``ebnn_harness.h`` (the model's
entry points, buffer sizes and the mode) and, for harnesses that read inputs from flash,
``ebnn_samples.c`` (the inputs as a constant array).  Modes:

* ``MODE_RUN`` -- every sample through the model with a trace, one record each;
* ``MODE_SIZE`` -- one inference between region marks, stack painted (sizes, bench);
* ``MODE_BLOCKS`` -- one inference with a mark at the end of every block (bench per block).

Every harness ends with the line ``EBNN-HARNESS OK <n>`` on its text channel.
"""

from __future__ import annotations

import numpy as np

from .. import codegen
from ..ir import Model

MODE_RUN, MODE_SIZE, MODE_BLOCKS = 1, 2, 3
SENTINEL = "EBNN-HARNESS OK"


def sample_input(graph: Model) -> np.ndarray:
    """The input of the SIZE / BLOCKS harnesses: a fixed pseudo-random image."""
    rng = np.random.default_rng(12345)
    return rng.integers(0, 256, size=(1, *graph.input_shape), dtype=np.uint8)


def harness_files(graph: Model, kernels: str, target: str, mode: int, samples: np.ndarray | None) -> dict[str, str]:
    """ebnn_harness.h, and ebnn_samples.c holding ``samples`` (None: the harness reads no flash inputs)."""
    ctx = codegen.model_context(graph, kernels, {"target": target})
    ctx["mode"] = mode
    ctx["max_block_bytes"] = max([b.out_bytes for b in graph.hidden] + [1])
    ctx["num_samples"] = 0 if samples is None else len(samples)
    files = {"ebnn_harness.h": codegen.render_template("mcu_harness.h.j2", ctx)}
    if samples is not None:
        ctx["rows"] = codegen._hex(np.ascontiguousarray(samples, np.uint8).reshape(-1))
        ctx["input_bytes"] = graph.input_bytes
        files["ebnn_samples.c"] = codegen.render_template("mcu_samples.c.j2", ctx)
    return files
