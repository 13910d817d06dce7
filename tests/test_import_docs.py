"""The complete Brevitas example of docs/import.md runs as written, and its commands pass."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ebnn_codegen.cli import main as cli_main

pytest.importorskip("brevitas")
ROOT = Path(__file__).resolve().parent.parent


def test_docs_brevitas_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    text = (ROOT / "docs" / "import.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    commands = [
        line.split("#")[0].strip()
        for line in re.findall(r"```\n(ebnn-gen import digits_bnn.*?)```", text, re.S)[0].splitlines()
        if line.strip()
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    (tmp_path / "example.py").write_text(code)
    subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    assert (tmp_path / "digits_bnn.onnx").exists()
    monkeypatch.chdir(tmp_path)
    for cmd in commands:
        argv = shlex.split(cmd)
        if "--target" in argv:
            continue  # the emulator run is covered by tests/test_import.py (marked emulator)
        assert cli_main(argv[1:]) == 0, cmd
        out = capsys.readouterr().out
        if argv[1] == "verify":
            assert out.startswith("PASS") and "mismatches: 0" in out
    assert (tmp_path / "digits_c" / "digits_bnn.c").exists()
