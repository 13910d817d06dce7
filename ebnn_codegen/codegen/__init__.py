"""Render the IR as C: a Jinja environment (StrictUndefined), identifiers, provenance, file writer.

Python computes every number here (:func:`model_context`); the templates in
``templates/`` only lay them out.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .. import bits
from ..config import check_identifier
from ..errors import CodegenError
from ..ir import Model, constants_sha256
from ..resources import resource_dir
from ..version import __version__
from .model_plan import block_plans, hex_rows, rows
from .traits import PORTABLE, TargetTraits

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


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one Jinja environment (cached: compiling the templates dominates rendering time)."""
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


_rows = rows
_hex = hex_rows


def provenance(model: Model | None, options: dict[str, Any]) -> dict[str, str]:
    opts = " ".join(f"{k}={sanitize_comment(v)}" for k, v in sorted(options.items()))
    return {
        "version": __version__,
        "model": sanitize_comment(model.name) if model else "",
        "constants_hash": constants_sha256(model) if model else "",
        "options": opts or "defaults",
    }


def model_context(
    model: Model, kernels: str, options: dict[str, Any], traits: TargetTraits = PORTABLE
) -> dict[str, Any]:
    """The template context of ``model``: names, sizes and the block plans (:mod:`.model_plan`)."""
    if kernels not in KERNELS:
        raise CodegenError(f"unknown kernel strategy '{kernels}' (choose {' or '.join(KERNELS)})")
    name = check_identifier(model.name, "model name")
    if model.score_scale_log2 is None or model.score_resolution is None:
        raise CodegenError("the IR has not been through the pass pipeline (no score scale)")
    buf = model.plan
    hidden, exit_ = block_plans(model, kernels, traits)
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
        "all_blocks": [*hidden, exit_],
        "n_hidden": len(hidden),
        "n_blocks": len(hidden) + 1,
        "last_hidden": len(hidden) - 1,
        "exit": exit_,
        "trace_bytes": buf.trace_bytes,
        "workspace_bytes": buf.workspace_bytes,
        "workspace_min": max([b.out_end for b in hidden] + [1]),
    }


def runtime_context(options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "prov": provenance(None, options or {}),
        "errors": ERRORS,
        "popcount_rows": rows(bits.POPCOUNT8, 16),
    }


def render_runtime(env: jinja2.Environment | None = None) -> dict[str, str]:
    env = env or environment()
    ctx = runtime_context()
    return {
        "ebnn_runtime.h": env.get_template("ebnn_runtime.h.j2").render(ctx),
        "ebnn_runtime.c": env.get_template("ebnn_runtime.c.j2").render(ctx),
    }


def render_model(
    model: Model, kernels: str = "fast", options: dict[str, Any] | None = None, traits: TargetTraits = PORTABLE
) -> dict[str, str]:
    """Render the C of ``model``: ``NAME.h``, ``NAME.c`` and the runtime. Returns {filename: text}.

    ``traits``: what the kernels may assume of the chip (:mod:`.traits`; the default keeps one C
    file valid for every target, choosing by preprocessor).
    """
    env = environment()
    ctx = model_context(model, kernels, options or {}, traits)
    files = {
        f"{ctx['name']}.h": env.get_template("model.h.j2").render(ctx),
        f"{ctx['name']}.c": env.get_template("model.c.j2").render(ctx),
    }
    files.update(render_runtime(env))
    return files


def render_template(template: str, ctx: dict[str, Any]) -> str:
    return environment().get_template(template).render(ctx)


def write_files(files: dict[str, str], outdir: str | os.PathLike[str], overwrite: bool = True) -> list[Path]:
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
