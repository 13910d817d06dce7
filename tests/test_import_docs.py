"""The complete Brevitas example of docs/import.md runs as written, and its commands pass."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("brevitas")
ROOT = Path(__file__).resolve().parent.parent


def test_docs_brevitas_example(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "import.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    commands = [
        line.split("#")[0].strip()
        for line in re.findall(r"```\n(ebnn-gen import .*?)```", text, re.S)[0].splitlines()
        if line.strip()
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    (tmp_path / "example.py").write_text(code)
    subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    assert (tmp_path / "digits_bnn.onnx").exists()
    for cmd in commands:
        argv = shlex.split(cmd)
        if "--target" in argv:
            continue  # the emulator run is covered by tests/test_import.py (marked emulator)
        proc = subprocess.run(
            [sys.executable, "-m", "ebnn_codegen.cli", *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, (cmd, proc.stderr)
        if argv[1] == "verify":
            assert proc.stdout.startswith("PASS") and "mismatches: 0" in proc.stdout
    assert (tmp_path / "digits_c" / "digits_bnn.c").exists()
