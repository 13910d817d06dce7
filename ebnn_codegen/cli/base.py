"""The subcommand base class and shared argument helpers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..api import load_npy
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


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``-q`` after the subcommand too (``ebnn-gen verify m.pt -q``); unset unless given there."""
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output on stderr"
    )


def progress(args: argparse.Namespace):
    """A log function for ``[n/N] step`` lines on stderr (None with --quiet)."""
    if getattr(args, "quiet", False):
        return None
    from .. import progress as bars

    return bars.write


def output_file(path: str) -> Path:
    """Check an output file's place before any work is done: its folder exists, it is not a folder.

    Every command that writes one output file (``run --output``, ``verify --json``, ``ddnn eval
    --json``, ``ddnn train --history``) checks it so, with the same error line."""
    p = Path(path)
    if p.is_dir():
        raise CodegenError(f"{p}: is a directory; give a file name for the output")
    if p.parent.exists() and not p.parent.is_dir():
        raise CodegenError(f"{p}: {p.parent} is a file, not a folder")
    if not p.parent.is_dir():
        raise CodegenError(f"{p}: the folder {p.parent} does not exist")
    return p


def load_samples(path: str) -> np.ndarray:
    """Inputs from a .npy file; an array without samples is refused before any work."""
    x = load_npy(path)
    if x.ndim >= 1 and len(x) == 0:
        raise CodegenError(f"input {path} holds no samples", hint="give at least one N×C×H×W input")
    return x


DATASETS = ("mnist", "fashion-mnist", "digits")


def load_inputs(spec: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``--input``: a .npy file (no labels), or ``DATASET[:SPLIT]`` (images and their labels)."""
    name, _, split = spec.partition(":")
    if Path(spec).exists() or name not in DATASETS:
        return load_samples(spec), None
    if split not in ("", "train", "test"):
        raise CodegenError(f"--input {spec}: the split must be train or test")
    from ..data import mnist

    return mnist.load(name, split or "test")


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
    add_kernels(parser)


def add_kernels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernels",
        default="fast",
        choices=("fast", "reference"),
        help="kernel strategy of the generated C: fast (default) or reference (plain loops, for checking)",
    )
