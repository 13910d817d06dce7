"""The host target: the generated C compiled natively and called through cffi, batched.

``build`` compiles the model, the runtime and a batch entry point into a
shared library (cached by the hash of the sources and flags, :mod:`.toolchain`) and loads
it in cffi's ABI mode; ``run`` pushes a whole N×C×H×W array through one call.
``run_sanitized`` builds the stdin/stdout harness with AddressSanitizer and
UndefinedBehaviorSanitizer and runs it as a separate process.  :class:`HostTarget` is the
registered target; the host has no chip, so every model fits it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

import numpy as np

from .. import codegen, costs
from ..codegen.traits import PORTABLE
from ..errors import CodegenError, ToolError
from ..ir import Model
from .base import RunResult, SerialOps, check_inputs, decode_records, decode_traces, random_inputs
from .chips import Chip
from .fit import FitReport
from .toolchain import build_c

OPT_FLAGS = ("-O2",)
SAN_FLAGS = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")

_LOADED: dict[str, tuple[Any, Any]] = {}


def host_sources(graph: Model, kernels: str) -> dict[str, str]:
    files = codegen.render_model(graph, kernels)
    ctx = codegen.model_context(graph, kernels, {})
    files[f"{graph.name}_batch.c"] = codegen.render_template("host_batch.c.j2", ctx)
    files[f"{graph.name}_harness.c"] = codegen.render_template("harness_stdio.c.j2", ctx)
    return files


def build(graph: Model | list[Model], kernels: str = "fast", cc: str = "cc") -> tuple[Any, Any]:
    """Compile one model (or several with distinct names, into one library) and load it."""
    graphs = graph if isinstance(graph, list) else [graph]
    files: dict[str, str] = {}
    sources = ["ebnn_runtime.c"]
    for g in graphs:
        for fname, text in host_sources(g, kernels).items():
            if fname in files and files[fname] != text:
                raise ToolError(f"two models in one host build both write {fname}")
            files[fname] = text
        sources += [f"{g.name}.c", f"{g.name}_batch.c"]
    libname = f"lib{graphs[0].name}{'_and_more' if len(graphs) > 1 else ''}.so"
    lib_path = build_c("host", files, sources, libname, [*OPT_FLAGS, "-shared", "-fPIC"], cc)
    key = str(lib_path)
    if key not in _LOADED:
        import cffi  # only the host build needs it

        ffi = cffi.FFI()
        ffi.cdef(
            "\n".join(
                f"int {g.name}_run_batch(size_t, const uint8_t *, int32_t *, int32_t *, uint8_t *);" for g in graphs
            )
        )
        _LOADED[key] = (ffi, ffi.dlopen(key))
    return _LOADED[key]


def run(
    graph: Model, x: np.ndarray, kernels: str = "fast", trace: bool = True, lib: tuple[Any, Any] | None = None
) -> RunResult:
    """Run the host build on uint8 inputs (N, C, H, W) (``lib``: a library from :func:`build`)."""
    x = check_inputs(graph, x)
    ffi, clib = lib if lib is not None else build(graph, kernels)
    n = len(x)
    k, tb = graph.num_classes, graph.plan.trace_bytes
    scores = np.zeros((n, k), np.int32)
    preds = np.zeros(n, np.int32)
    traces = np.zeros((n, tb), np.uint8) if trace else None
    rc = getattr(clib, f"{graph.name}_run_batch")(
        n,
        ffi.from_buffer("uint8_t[]", x),
        ffi.from_buffer("int32_t[]", scores, require_writable=True),
        ffi.from_buffer("int32_t[]", preds, require_writable=True),
        ffi.from_buffer("uint8_t[]", traces, require_writable=True) if traces is not None else ffi.NULL,
    )
    if rc != 0:
        raise ToolError(f"generated code returned error {rc}")
    layers = decode_traces(graph, traces) if traces is not None else []
    return RunResult(preds.astype(np.int64), scores, layers, graph.score_scale)


def run_sanitized(graph: Model, x: np.ndarray, kernels: str = "fast", cc: str = "cc") -> RunResult:
    """Run the stdin/stdout harness built with ASan + UBSan; any report fails the run."""
    x = check_inputs(graph, x)
    files = host_sources(graph, kernels)
    name = graph.name
    sources = [f"{name}.c", "ebnn_runtime.c", f"{name}_harness.c"]
    exe = build_c("host", files, sources, f"{name}_harness_san", SAN_FLAGS, cc)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, env=env, timeout=600)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0 or f"EBNN-HARNESS OK {len(x)}" not in err or "runtime error" in err:
        raise ToolError(f"sanitized harness failed (exit {proc.returncode}):\n{err.strip()[-3000:]}")
    return decode_records(graph, proc.stdout, len(x))


class HostTarget:
    """The machine running ebnn-codegen: cc -O2, called through cffi; bench measures time."""

    name = "host"
    description = "native build, called through cffi"
    traits = PORTABLE  # the host verifies the portable C that `export` writes without a target

    @property
    def chip(self) -> Chip | None:
        return None

    @property
    def serial(self) -> SerialOps | None:
        return None

    def available(self) -> bool:
        return shutil.which("cc") is not None

    def run(self, graph: Model, x: np.ndarray, kernels: str = "fast", timeout_s: float | None = None) -> RunResult:
        return run(graph, x, kernels)

    def check_fits(self, graph: Model, kernels: str = "fast", measure: bool | None = None) -> FitReport:
        """Every model fits the host (no chip, no budget)."""
        totals = costs.report(graph)["totals"]
        return FitReport("host", "host", kernels, int(totals["flash_bytes"]), 0, 0, 0, False, "no limit on the host")

    def size(self, graph: Model, kernels: str = "fast") -> dict[str, Any]:
        raise CodegenError("target 'host' cannot measure sizes", hint="name a microcontroller target")

    def bench(self, graph: Model, kernels: str = "fast", samples: int = 256) -> dict[str, Any]:
        """Wall time per inference of a batch of ``samples`` random inputs (after one warm-up)."""
        x = random_inputs(graph.input_shape, max(1, samples))
        run(graph, x[:1], kernels)  # build once
        t0 = time.perf_counter()
        run(graph, x, kernels)
        dt = (time.perf_counter() - t0) / len(x)
        macs = costs.report(graph)["totals"]["binary_macs"]
        return {"target": "host", "kernels": kernels, "binary_macs": macs, "us_per_inference": dt * 1e6}


__all__ = ["HostTarget", "build", "run", "run_sanitized", "host_sources", "OPT_FLAGS", "SAN_FLAGS"]
