"""The subcommand base class and shared argument helpers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CodegenError


class UsageError(CodegenError):
    """Bad command-line usage (exit 2)."""


class Command:
    """A subcommand: ``name``, ``help``, ``add_arguments(parser)`` and ``run(args) -> exit code``."""

    name = ""
    help = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def progress(args: argparse.Namespace):
    """A log function for ``[n/N] step`` lines on stderr (None with --quiet)."""
    if getattr(args, "quiet", False):
        return None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def output_file(path: str) -> Path:
    """Check an output file's place before any work is done: its folder exists, it is not a folder."""
    p = Path(path)
    if p.is_dir():
        raise CodegenError(f"{p}: is a directory; give a file name for the output")
    if not p.parent.is_dir():
        raise CodegenError(f"{p}: the folder {p.parent} does not exist")
    return p


def load_npy(path: str) -> np.ndarray:
    p = Path(path)
    if p.is_dir():
        raise CodegenError(f"{p}: is a directory, not a .npy file")
    if not p.is_file():
        raise CodegenError(f"{p}: no such file")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        what = "an empty file" if not magic else "an .npz archive" if magic[:2] == b"PK" else "not a .npy file"
        raise CodegenError(f"{p}: {what}, expected one array saved by numpy.save", hint="np.save(path, x)")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise CodegenError(f"{p}: holds Python objects (a pickle), refused; save a uint8 array") from None
        raise CodegenError(f"{p}: damaged or truncated .npy file ({str(exc).split('. ')[0][:120]})") from None
    except Exception as exc:
        raise CodegenError(f"{p}: not a readable .npy array ({str(exc).splitlines()[0][:120]})") from None


def load_samples(path: str) -> np.ndarray:
    """Inputs from a .npy file; an array without samples is refused before any work."""
    x = load_npy(path)
    if x.ndim >= 1 and len(x) == 0:
        raise CodegenError(f"input {path} holds no samples", hint="give at least one N×C×H×W input")
    return x


def emit_json(data: Any, path: str | None = None) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=_default) + "\n"
    if path:
        from ..api import write_files

        p = Path(path)
        write_files({p.name: text}, p.parent if str(p.parent) else ".")
    else:
        sys.stdout.write(text)


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="checkpoint (.pt) saved by ebnn_codegen.save")


def add_target(parser: argparse.ArgumentParser, default: str = "host") -> None:
    parser.add_argument(
        "--target", default=default, help=f"where the C runs (default: {default}); see `ebnn-gen targets`"
    )
    parser.add_argument(
        "--kernels", default="fast", choices=("fast", "reference"), help="kernel strategy (default: fast)"
    )
