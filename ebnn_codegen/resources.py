"""Where the package's data directories (templates/, firmware/) are.

In a source checkout or an editable install they are the repository's
top-level ``templates/`` and ``firmware/``; a regular install ships them inside
the package (``ebnn_codegen/templates``, ``ebnn_codegen/firmware``, mapped by
setup.py).
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"ebnn-codegen data directory '{name}' not found (broken installation?)")
