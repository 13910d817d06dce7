"""Importers: ONNX / QONNX graphs -> the config + state_dict that ``build`` makes.

Needs the ``import`` extra (``pip install ebnn-codegen[import]``: onnx,
onnxruntime, qonnx); nothing outside this package imports them.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import CodegenError


def require() -> None:
    missing = []
    for mod in ("onnx", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise CodegenError(
            f"importing ONNX models needs {', '.join(missing)}",
            hint='pip install "ebnn-codegen[import]"',
        )


def import_model(
    path: str | os.PathLike[str],
    *,
    input_scale: float = 1.0,
    input_offset: float = 0.0,
    name: str | None = None,
) -> Any:
    """An ONNX or QONNX file -> an ebnn-codegen device section (eval mode) with its import notes."""
    require()
    from .onnx import import_onnx

    return import_onnx(path, input_scale=input_scale, input_offset=input_offset, name=name)
