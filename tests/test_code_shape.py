"""The compiler core stays small: modules of at most ~400 lines, functions of at most 60 (issue 11)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ebnn_codegen"
CORE = sorted(
    [PKG / "compiler.py", PKG / "ir.py", PKG / "ir_check.py", *PKG.glob("codegen/*.py"), *PKG.glob("passes/*.py")]
)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PKG)))
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    assert text.count("\n") <= 400, f"{path.name}: {text.count(chr(10))} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 60, f"{path.name}: {node.name} has {length} lines"
