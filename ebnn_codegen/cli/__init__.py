"""``ebnn-gen``: a thin shell over :mod:`ebnn_codegen.api`.

Exit codes (one place, :func:`main`):

* 0 — success;
* 1 — the command ran but its check failed (``verify`` found a mismatch);
* 2 — a user mistake: bad arguments, a missing or damaged file, an invalid
  config, a model that does not fit (one ``error: ...`` line on stderr, no traceback);
* 3 — an external tool failed (compiler, emulator, timeout);
* 130 — interrupted (Ctrl-C).

Anything else is a bug and keeps its traceback; ``-v`` shows the traceback of
user errors too.  A broken pipe (``ebnn-gen report m.pt | head``) exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from .. import progress as progress_bars
from ..errors import CodegenError, ToolError
from .base import Command, UsageError, add_quiet
from .commands import COMMANDS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ebnn-gen", description="Binarized neural networks from PyTorch to bit-exact MCU C.")
    parser.add_argument("--version", action="version", version=f"ebnn-gen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress output on stderr (anywhere on the line)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cls in COMMANDS:
        cmd: Command = cls()
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        add_quiet(p)
        p.set_defaults(_command=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        args._argv = list(sys.argv[1:] if argv is None else argv)  # recorded in trained checkpoints
        progress_bars.configure(quiet=bool(getattr(args, "quiet", False)))
        if getattr(args, "_command", None) is None:
            parser.print_help(sys.stderr)
            return 2
        return int(args._command.run(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except CodegenError as exc:
        if args is not None and getattr(args, "verbose", False):
            traceback.print_exc()
        first = " ".join(str(exc).split("\n")[:1]) if not isinstance(exc, ToolError) else str(exc)
        print(f"error: {first}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 3 if isinstance(exc, ToolError) else exc.exit_code


def entry() -> None:  # pragma: no cover - console script
    sys.exit(main())
