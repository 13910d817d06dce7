"""Render the IR as C: a Jinja environment (StrictUndefined), identifiers, provenance, file writer.

Python computes every number here (:func:`model_context`); the templates in
``templates/`` only lay them out.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from .. import __version__, bits
from ..config import check_identifier
from ..errors import CodegenError
from ..ir import CONST, GE, LE, Model
from ..resources import resource_dir
from . import kernels as kernels_mod

KERNELS = ("fast", "reference")


@dataclass(frozen=True)
class ErrorCode:
    macro: str
    code: int
    text: str


# The one source of the C error codes and their texts (ebnn_runtime.h and ebnn_strerror).
ERRORS = (
    ErrorCode("EBNN_ERR_NULL", -1, "a required pointer argument is NULL"),
    ErrorCode("EBNN_ERR_BLOCK", -2, "no hidden block with that index"),
)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
        autoescape=False,
    )
    return env


def sanitize_comment(text: str) -> str:
    """Text safe inside a C block comment on one line (no ``*/``, ``/*``, newlines or non-ASCII)."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))
    return text.replace("*/", "*?").replace("/*", "?*")


def _rows(values: Any, per_row: int, fmt: str = "{}") -> list[str]:
    flat = [fmt.format(int(v)) for v in np.asarray(values).reshape(-1)]
    if not flat:
        return []
    return [", ".join(flat[i : i + per_row]) + "," for i in range(0, len(flat), per_row)]


def _hex(values: Any) -> list[str]:
    return _rows(values, 16, "0x{:02x}")


def provenance(model: Model | None, options: dict[str, Any]) -> dict[str, str]:
    opts = " ".join(f"{k}={sanitize_comment(v)}" for k, v in sorted(options.items()))
    return {
        "version": __version__,
        "model": sanitize_comment(model.name) if model else "",
        "source_hash": sanitize_comment(model.source_hash) if model else "",
        "options": opts or "defaults",
    }


def _flip_and_threshold(block) -> tuple[np.ndarray, np.ndarray]:
    """IR (threshold, direction, constant) -> C form: out bit = (acc >= t) XOR flip.

    GE t: t, flip 0.  LE t: acc <= t  <=>  !(acc >= t + 1): t + 1, flip 1.
    CONST +1: -(bound + 1) (always >=), flip 0.  CONST -1: bound + 1 (never >=), flip 0.
    """
    t = block.threshold.astype(np.int64).copy()
    flip = np.zeros(len(t), bool)
    le = block.direction == LE
    t[le] += 1
    flip[le] = True
    const = block.direction == CONST
    t[const & (block.constant > 0)] = -(block.acc_bound + 1)
    t[const & (block.constant < 0)] = block.acc_bound + 1
    assert np.all((block.direction == GE) | le | const)
    return t.astype(np.int32), flip


def model_context(model: Model, kernels: str, options: dict[str, Any]) -> dict[str, Any]:
    if kernels not in KERNELS:
        raise CodegenError(f"unknown kernel strategy '{kernels}' (choose {' or '.join(KERNELS)})")
    name = check_identifier(model.name, "model name")
    if model.buffers is None or model.score_scale_log2 is None:
        raise CodegenError("the IR has not been through the pass pipeline (no buffer plan)")
    buf = model.buffers
    ctx_blocks = []
    for b in model.blocks:
        c, h, w = b.in_shape
        pool = b.pool
        pool_fields = [0, 0, 1, 1, 0, 0] if pool is None else [*pool.kernel, *pool.stride, *pool.padding]
        packed = b.packed_weights
        entry: dict[str, Any] = {
            "index": b.index,
            "kind": b.kind,
            "is_exit": b.is_exit,
            "in_shape": b.in_shape,
            "out_shape": b.out_shape,
            "kernel": b.kernel,
            "stride": b.stride,
            "padding": b.padding,
            "pool": pool,
            "pool_fields": pool_fields,
            "in_c": c,
            "in_h": h,
            "in_w": w,
            "out_c": b.out_channels,
            "conv_h": b.conv_shape[1],
            "conv_w": b.conv_shape[2],
            "out_h": b.out_shape[1],
            "out_w": b.out_shape[2],
            "w_bytes": packed.shape[1],
            "weight_len": packed.size,
            "weight_rows": _hex(packed),
            "out_bytes": b.out_bytes,
            "fn": "u8" if b.is_first else "bin",
        }
        # binary blocks left to the runtime kernels: 4-byte aligned rows on 32-bit targets
        entry["word_rows"] = (not b.is_first) and kernels == "fast"
        entry["row_pad"] = (-packed.shape[1]) % 4 if entry["word_rows"] else 0
        entry["weight_rows2d"] = [_hex(row) for row in packed] if entry["row_pad"] else []
        if b.is_exit:
            entry["mul"] = [str(int(v)) for v in b.score_mul]
            entry["add"] = [str(int(v)) for v in b.score_add]
            entry["in_offset"] = buf["slot_offset"][buf["slot"][-1]]
        else:
            t, flip = _flip_and_threshold(b)
            flips = bits.pack_flags(flip)
            entry["threshold_rows"] = _rows(t, 12)
            entry["spec"] = kernels_mod.conv_kernel(b, t, flip) if kernels == "fast" else None
            if entry["spec"] is not None:
                entry["word_rows"], entry["row_pad"], entry["weight_rows2d"] = False, 0, []
            entry["flips"] = [f"0x{int(v):02x}" for v in flips]
            entry["flip_len"] = len(flips)
            slot = buf["slot"][b.index]
            entry["out_offset"] = buf["slot_offset"][slot]
            entry["trace_offset"] = buf["trace_offsets"][b.index]
            if b.index == 0:
                entry["in_expr"], entry["in_label"] = "input", "input"
            else:
                prev = buf["slot_offset"][buf["slot"][b.index - 1]]
                entry["in_expr"] = f"workspace + {prev}"
                entry["in_label"] = f"workspace[{prev}..)"
        ctx_blocks.append(entry)
    hidden = ctx_blocks[:-1]
    bin_specs = [e["index"] for e in hidden if e["spec"] is not None and not e["spec"]["first"]]
    return {
        "name": name,
        "NAME": name.upper(),
        "prov": provenance(model, options | {"kernels": kernels}),
        "kernels": kernels,
        "errors": ERRORS,
        "input_shape": model.input_shape,
        "input_bytes": model.input_bytes,
        "num_classes": model.num_classes,
        "scale_log2": model.score_scale_log2,
        "resolution": f"{model.score_resolution:.3g}",
        "blocks": hidden,
        "all_blocks": ctx_blocks,
        "exit": ctx_blocks[-1],
        "word_helpers_at": bin_specs[0] if bin_specs else -1,
        "trace_bytes": buf["trace_bytes"],
        "workspace_bytes": buf["workspace_bytes"],
        "workspace_min": max([e["out_offset"] + e["out_bytes"] for e in hidden] + [1]),
        "trace_sum_expr": " + ".join(f"{name.upper()}_BLOCK{e['index']}_BYTES" for e in hidden),
    }


def runtime_context(options: dict[str, Any] | None = None) -> dict[str, Any]:
    table = [bin(i).count("1") for i in range(256)]
    return {
        "prov": provenance(None, options or {}),
        "errors": ERRORS,
        "popcount_rows": _rows(table, 16),
    }


def render_runtime(env: jinja2.Environment | None = None) -> dict[str, str]:
    env = env or environment()
    ctx = runtime_context()
    return {
        "ebnn_runtime.h": env.get_template("ebnn_runtime.h.j2").render(ctx),
        "ebnn_runtime.c": env.get_template("ebnn_runtime.c.j2").render(ctx),
    }


def render_model(model: Model, kernels: str = "fast", options: dict[str, Any] | None = None) -> dict[str, str]:
    """Render the C of ``model``: ``NAME.h``, ``NAME.c`` and the runtime. Returns {filename: text}."""
    env = environment()
    ctx = model_context(model, kernels, options or {})
    files = {
        f"{ctx['name']}.h": env.get_template("model.h.j2").render(ctx),
        f"{ctx['name']}.c": env.get_template("model.c.j2").render(ctx),
    }
    files.update(render_runtime(env))
    return files


def render_template(template: str, ctx: dict[str, Any]) -> str:
    return environment().get_template(template).render(ctx)


def write_files(files: dict[str, str], outdir: str | os.PathLike, overwrite: bool = True) -> list[Path]:
    """Write ``files`` into ``outdir`` atomically: all appear, or none (no partial output).

    The files are first written into a temporary directory beside ``outdir``,
    then moved into place; a directory that did not exist before is created
    only if every file was written.
    """
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise CodegenError(f"{out}: exists and is not a directory")
    for fname in files:
        if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.\-/]*", fname) or ".." in fname:
            raise CodegenError(f"refusing to write a file named {fname!r}")
    try:
        return _write_atomically(files, out, overwrite)
    except OSError as exc:  # a path the user gave: unwritable, read-only, on another device ...
        where = exc.filename or out
        raise CodegenError(f"{out}: cannot write the output ({where}: {exc.strerror or exc})") from None


def _write_atomically(files: dict[str, str], out: Path, overwrite: bool) -> list[Path]:
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ebnn-", dir=parent))
    try:
        for fname, text in files.items():
            p = tmp / fname
            p.parent.mkdir(parents=True, exist_ok=True)
            data = text.encode("utf-8") if isinstance(text, str) else text
            p.write_bytes(data)
        created = not out.exists()
        if created:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it 0700; a new output directory gets the usual mode
            os.replace(tmp, out)
            return [out / f for f in files]
        for fname in files:
            dest = out / fname
            if dest.exists() and not overwrite:
                raise CodegenError(f"{dest}: exists (refusing to overwrite)")
        written = []
        for fname in files:
            dest = out / fname
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / fname, dest)
            written.append(dest)
        return written
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
