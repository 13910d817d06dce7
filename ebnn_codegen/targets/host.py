"""The host target: the generated C compiled natively and called through cffi, batched.

``build`` compiles the model, the runtime and a batch entry point into a
shared library (cached by the hash of the sources and flags) and loads it in
cffi's ABI mode; ``run`` pushes a whole N×C×H×W array through one call.
``run_sanitized`` builds the stdin/stdout harness with AddressSanitizer and
UndefinedBehaviorSanitizer and runs it as a separate process.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from .. import codegen
from ..errors import ToolError
from ..ir import Model
from .base import RunResult, cache_dir, check_inputs, decode_records, decode_traces, digest, require_tool

CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Wconversion", "-Werror"]
SAN_FLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]

_LOADED: dict[str, tuple[object, object]] = {}


def host_sources(graph: Model, kernels: str) -> dict[str, str]:
    files = codegen.render_model(graph, kernels)
    ctx = codegen.model_context(graph, kernels, {})
    files[f"{graph.name}_batch.c"] = codegen.render_template("host_batch.c.j2", ctx)
    files[f"{graph.name}_harness.c"] = codegen.render_template("harness_stdio.c.j2", ctx)
    return files


def _compile(files: dict[str, str], sources: list[str], out: str, flags: list[str], cc: str) -> Path:
    d = cache_dir("host") / digest(files, flags, cc, out)
    target = d / out
    if target.exists():
        return target
    d.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (d / fname).write_text(text)
    tmp = d / (out + ".tmp")
    cmd = [require_tool(cc, cc), *flags, "-I", str(d), *[str(d / s) for s in sources], "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"{cc} failed to compile the generated C:\n{proc.stderr.strip()}")
    os.replace(tmp, target)
    return target


def build(graph: Model | list[Model], kernels: str = "fast", cc: str = "cc") -> tuple[object, object]:
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
    lib_path = _compile(files, sources, libname, [*CFLAGS, "-shared", "-fPIC"], cc)
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
    graph: Model, x: np.ndarray, kernels: str = "fast", trace: bool = True, lib: tuple[object, object] | None = None
) -> RunResult:
    """Run the host build on uint8 inputs (N, C, H, W) (``lib``: a library from :func:`build`)."""
    x = check_inputs(graph, x)
    ffi, clib = lib if lib is not None else build(graph, kernels)
    n = len(x)
    assert graph.buffers is not None
    k, tb = graph.num_classes, int(graph.buffers["trace_bytes"])
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
    exe = _compile(
        files,
        [f"{name}.c", "ebnn_runtime.c", f"{name}_harness.c"],
        f"{name}_harness_san",
        ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Wconversion", "-Werror", *SAN_FLAGS],
        cc,
    )
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, env=env, timeout=600)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0 or f"EBNN-HARNESS OK {len(x)}" not in err or "runtime error" in err:
        raise ToolError(f"sanitized harness failed (exit {proc.returncode}):\n{err.strip()[-3000:]}")
    return decode_records(graph, proc.stdout, len(x))


__all__ = ["build", "run", "run_sanitized", "host_sources", "CFLAGS"]
