"""The bad-input corpus: every file in ``tests/invalid/invalid_*`` through the CLI, in-process.

The contract for a user mistake (docs/hardening.md): exit code 2; stderr is
exactly one line starting with ``error: `` that names the problem, optionally
followed by one ``hint: `` line, and nothing else (progress is off with
``-q``); no traceback; nothing written (no partial output directory, no
``out.npz``, no temporary file); nothing executed (the pickle payloads would
create ``EBNN_PAYLOAD_RAN`` in the working directory).

The corpus and its sources are made by ``tests/invalid/make_corpus.py``; the
expected text of each error is in ``tests/invalid/expected.json``, extra
command-line options for a file (``--target avr``) in ``tests/invalid/args.json``.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ebnn_codegen.cli import main

CORPUS = Path(__file__).parent / "invalid"
EXPECTED: dict[str, str] = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
ARGS: dict[str, list[str]] = json.loads((CORPUS / "args.json").read_text(encoding="utf-8"))  # extra options
CASES = sorted(CORPUS.glob("invalid_*"))
BASE_MODEL = CORPUS / "base_model.pt"
MARKER = "EBNN_PAYLOAD_RAN"
PAYLOADS = (
    "invalid_pickle_code_execution.pt",
    "invalid_pickle_code_execution_legacy.pt",
    "invalid_input_pickled_objects.npy",
)
ABSURD_SECONDS = 5.0  # absurd sizes are refused from the config alone, before any allocation


def argv_for(path: Path, tmp: Path) -> list[str]:
    if path.suffix == ".pt":
        return ["-q", "export", str(path), *ARGS.get(path.name, []), "-o", str(tmp / "out")]
    if path.suffix == ".npy":
        return ["-q", "run", str(BASE_MODEL), "--input", str(path), "--output", str(tmp / "out.npz")]
    if path.suffix == ".name":
        return ["-q", "export", str(BASE_MODEL), "--name", path.read_bytes().decode(), "-o", str(tmp / "out")]
    raise AssertionError(f"no command for {path.name}: add one to argv_for")


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_invalid(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    argv = argv_for(path, tmp_path)
    t0 = time.perf_counter()
    rc = main(argv)
    elapsed = time.perf_counter() - t0
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert rc == 2, cap.err
    assert "Traceback" not in cap.err + cap.out
    assert lines and lines[0].startswith("error: "), cap.err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), cap.err
    assert EXPECTED[path.name] in lines[0]
    assert cap.out == ""
    # nothing written and nothing executed: no out/, no out.npz, no temporary file, no marker
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    if "absurd" in path.name:
        assert elapsed < ABSURD_SECONDS, f"{path.name} took {elapsed:.1f} s to refuse"


def test_corpus_and_expectations_agree() -> None:
    assert len(CASES) >= 90
    assert sorted(p.name for p in CASES) == sorted(EXPECTED)
    assert BASE_MODEL.exists() and main(["-q", "info", str(BASE_MODEL)]) == 0


@pytest.mark.parametrize("name", PAYLOADS)
def test_payload_is_live(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The payloads do run when loaded unsafely, so their absence above means something."""
    monkeypatch.chdir(tmp_path)
    path = CORPUS / name
    if name.endswith(".npy"):
        np.load(path, allow_pickle=True)
    elif name.endswith("_legacy.pt"):
        pickle.loads(path.read_bytes())
    else:  # the pickle inside the archive, with torch's tensor rebuilders stubbed out
        with zipfile.ZipFile(path) as z:
            data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
        _StubTorchUnpickler(io.BytesIO(data)).load()
    assert (tmp_path / MARKER).exists()


class _StubTorchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith("torch") or module == "collections":
            return lambda *args, **kwargs: None
        return super().find_class(module, name)

    def persistent_load(self, pid):
        return None


def test_torch_load_is_always_weights_only() -> None:
    """Every torch.load in the package, the examples and the tests passes weights_only=True."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for py in [*root.glob("ebnn_codegen/**/*.py"), *root.glob("examples/**/*.py"), *root.glob("tests/**/*.py")]:
        for m in re.finditer(r"torch\.load\(", py.read_text(encoding="utf-8")):
            call = py.read_text(encoding="utf-8")[m.end() : m.end() + 300].split("\n)")[0]
            if "weights_only=True" not in call:
                offenders.append(f"{py.relative_to(root)}: {call[:60]!r}")
    assert offenders == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "{model}", "--input", "{npy}", "--output", "{tmp}/no/such/dir/out.npz"], "does not exist"),
        (["run", "{model}", "--input", "{npy}", "--output", "{tmp}"], "is a directory"),
        (["run", "{model}", "--input", "{tmp}", "--output", "{tmp}/out.npz"], "is a directory, not a .npy file"),
        (["run", "{model}", "--input", "{npy}", "--output", "/proc/out.npz"], "cannot write the output"),
        (["export", "{model}", "-o", "{tmp}/a_file"], "exists and is not a directory"),
        (["export", "{model}", "-o", "{tmp}/a_file/sub"], "cannot write the output"),
        (["export", "{model}", "-o", "/proc/ebnn/out"], "cannot write the output"),
    ],
    ids=[
        "run-missing-folder",
        "run-output-is-dir",
        "run-input-is-dir",
        "run-unwritable",
        "export-onto-file",
        "export-under-file",
        "export-unwritable",
    ],
)
def test_bad_output_places(argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Output paths the user gets wrong: one error line, nothing left behind."""
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((1, 1, 8, 8), np.uint8))
    (tmp_path / "a_file").write_text("not a folder")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(model=BASE_MODEL, npy=npy, tmp=tmp_path) for a in argv]
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) in (1, 2) and lines[0].startswith("error: ") and expected in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
