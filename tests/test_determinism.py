"""Determinism: the same checkpoint and options give byte-identical C, in every process and on every machine.

* Two separate processes (different ``PYTHONHASHSEED``) export the same models;
  every file must be byte-identical.
* Snapshot: the shipped example models (``examples/models/*.pt``) and the
  corpus' base model give exactly the files committed in ``tests/golden/<model>/``.
  After an intended change to the generated C, update the copies on purpose
  and review the diff::

      EBNN_UPDATE_GOLDEN=1 pytest tests/test_determinism.py

* The bad-input corpus is reproducible from its generator.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import random_model

import ebnn_codegen as E
from ebnn_codegen.checkpoint import read_checkpoint
from ebnn_codegen.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
BASE_MODEL = ROOT / "tests" / "invalid" / "base_model.pt"
UPDATE = os.environ.get("EBNN_UPDATE_GOLDEN") == "1"
UPDATE_COMMAND = "EBNN_UPDATE_GOLDEN=1 pytest tests/test_determinism.py"


def device_models() -> list[Path]:
    shipped = sorted((ROOT / "examples" / "models").glob("*.pt"))
    return [p for p in shipped if read_checkpoint(p)["kind"] == "device"] + [BASE_MODEL]


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_export_is_identical_across_processes(tmp_path: Path, tiny_config: dict) -> None:
    extreme = tmp_path / "extreme.pt"
    E.save(random_model(tiny_config, seed=3, extreme=True), extreme)
    models = [BASE_MODEL, extreme]
    procs = []
    for run, seed in (("a", "1"), ("b", "2")):
        code = (
            "import sys; from ebnn_codegen.cli import main\n"
            f"for i, m in enumerate({[str(m) for m in models]!r}):\n"
            f"    rc = main(['-q', 'export', m, '-o', {str(tmp_path / run)!r} + '/' + str(i)])\n"
            "    assert rc == 0, rc\n"
        )
        env = dict(os.environ, PYTHONHASHSEED=seed)
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert len(a) == 5 * len(models)  # NAME.c, NAME.h, the runtime and README.md
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs between two processes"


RUNTIME = ("ebnn_runtime.c", "ebnn_runtime.h")  # model-independent: one golden copy in tests/golden/_runtime


def _check_golden(got: dict[str, bytes], golden: Path) -> None:
    if UPDATE:
        shutil.rmtree(golden, ignore_errors=True)
        golden.mkdir(parents=True)
        for name, data in got.items():
            (golden / name).write_bytes(data)
        return
    assert golden.is_dir(), f"no golden copy {golden.name}: run `{UPDATE_COMMAND}` and commit tests/golden/"
    want = tree(golden)
    assert sorted(got) == sorted(want), f"files differ from tests/golden/{golden.name}; if intended: `{UPDATE_COMMAND}`"
    for name in want:
        assert got[name] == want[name], (
            f"{name} differs from tests/golden/{golden.name}/{name}; if the change is intended, run "
            f"`{UPDATE_COMMAND}` and review the diff"
        )


@pytest.mark.parametrize("model", device_models(), ids=lambda p: p.stem)
def test_golden_copies(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["-q", "export", str(model), "-o", str(out)]) == 0
    got = tree(out)
    _check_golden({k: v for k, v in got.items() if k not in RUNTIME}, GOLDEN / model.stem)
    _check_golden({k: v for k, v in got.items() if k in RUNTIME}, GOLDEN / "_runtime")


def test_no_stale_golden_copies() -> None:
    stems = {p.stem for p in device_models()} | {"_runtime"}
    stale = sorted(d.name for d in GOLDEN.iterdir() if d.is_dir() and d.name not in stems)
    if UPDATE:
        for name in stale:
            shutil.rmtree(GOLDEN / name)
        return
    assert stale == [], f"golden copies without a model: {stale}; run `{UPDATE_COMMAND}`"


def test_corpus_is_reproducible() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "invalid" / "make_corpus.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr + "\nregenerate with: python tests/invalid/make_corpus.py"
