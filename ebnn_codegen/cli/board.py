"""``ebnn-gen flash``, ``ebnn-gen board ...`` and the ``--port`` forms of run / verify / bench.

ebnn-gen flash MODEL --board uno --port /dev/ttyACM0
ebnn-gen run MODEL --port /dev/ttyACM0 --input x.npy --output out.npz
ebnn-gen verify MODEL --port /dev/ttyACM0 [--input X.npy | --samples N]
ebnn-gen bench MODEL --port /dev/ttyACM0 --json
ebnn-gen board list
ebnn-gen board simulate --board uno            # prints the pty's path, runs until Ctrl-C
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .. import api
from ..errors import CodegenError
from .base import Command, add_kernels, add_model, emit_json, progress


def add_port_arguments(p: argparse.ArgumentParser) -> None:
    """--port and the link's options (run, verify, bench)."""
    g = p.add_argument_group("on a board (through the serial agent flashed by `ebnn-gen flash`)")
    g.add_argument("--port", metavar="PORT", help="run on the board on this serial port instead of --target")
    g.add_argument("--baud", type=int, default=115200, help="the agent's baud rate (default 115200)")
    g.add_argument(
        "--boot-wait",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds to wait after opening the port (the board resets; default 2)",
    )
    g.add_argument("--retries", type=int, default=3, help="tries per request after the first (default 3)")


def _opts(args: argparse.Namespace) -> api.PortOptions:
    if args.baud <= 0 or args.boot_wait < 0 or args.retries < 0:
        raise CodegenError("--baud must be > 0, --boot-wait and --retries >= 0")
    return api.PortOptions(args.port, args.baud, args.boot_wait, retries=args.retries)


def _port_target_clash(args: argparse.Namespace) -> None:
    if getattr(args, "target", "host") not in (None, "host"):
        raise CodegenError("give --target or --port, not both")


def run_port(args: argparse.Namespace, x: np.ndarray) -> api.RunResult:
    """run --port: the RunResult from the board."""
    _port_target_clash(args)
    graph = api.compile(args.model, log=progress(args))
    return api.board_run(graph, x, _opts(args), kernels=args.kernels, model_path=args.model, log=progress(args))


def verify_port(args: argparse.Namespace, x: np.ndarray | None) -> int:
    """verify --port: torch, the IR reference and the host build against the board."""
    _port_target_clash(args)
    model = api.load(args.model)
    graph = api.compile(model)
    if x is None:
        x = api.random_inputs(graph.input_shape, args.samples, args.seed)
    result = api.board_run(graph, x, _opts(args), kernels=args.kernels, model_path=args.model, log=progress(args))
    rep = api.compare(graph, model, x, result, f"board on {args.port}", args.kernels, args.reference)  # type: ignore[arg-type]
    host = api.run(graph, x, kernels=args.kernels)
    same = (
        np.array_equal(host.pred, result.pred)
        and np.array_equal(host.scores, result.scores)
        and all(np.array_equal(a, b) for a, b in zip(host.layers, result.layers))
    )
    ok = rep.ok and same
    text = rep.summary()
    if ok != rep.ok:
        text = text.replace("PASS:", "FAIL:", 1)
    print(text)
    print(f"  board == host build (bits, scores, predictions): {'yes' if same else 'NO'}")
    st = result.stats
    print(
        f"  link: {st['inputs_per_second']} inputs/s at {st['baud']} baud, {st['retries']} retries, "
        f"mean {st['mean_cycles']:.0f} cycles per inference on the board's timer"
    )
    if args.json:
        emit_json({**rep.__dict__, "host_exact": same, "ok": ok, "link": st}, args.json)
    return 0 if ok else 1


def bench_port(args: argparse.Namespace) -> int:
    """bench --port: the board's timer (at most 16 runs), the emulator's cycles beside."""
    _port_target_clash(args)
    graph = api.compile(args.model)
    samples = min(max(1, args.samples), 16)
    data = api.board_bench(graph, _opts(args), kernels=args.kernels, samples=samples, model_path=args.model)
    if args.json:
        emit_json(data)
    else:
        for k, v in data.items():
            print(f"{k:>24}: {v}")
    return 0


class Flash(Command):
    name = "flash"
    help = "build the model with the serial agent, upload it to a board, check that it answers"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_model(p)
        p.add_argument("--board", required=True, help="board (see `ebnn-gen board list`)")
        p.add_argument("--port", required=True, metavar="PORT", help="the board's serial port, e.g. /dev/ttyACM0")
        add_kernels(p)
        p.add_argument("--baud", type=int, default=None, help="the agent's baud rate (default: the board's)")
        p.add_argument(
            "--upload-baud", type=int, default=None, help="the bootloader's baud rate (default: the board's)"
        )
        p.add_argument(
            "--attempts", type=int, default=None, help="tries to reach an optiboot bootloader (avrdude's default 10)"
        )
        p.add_argument("--no-check", action="store_true", help="do not open the port to check INFO after uploading")
        p.add_argument("--json", action="store_true", help="print what was done as JSON")

    def run(self, args: argparse.Namespace) -> int:
        board = api.board(args.board)
        graph = api.compile(args.model)
        facts = api.flash(
            graph,
            board.name,
            args.port,
            kernels=args.kernels,
            baud=args.baud,
            upload_baud=args.upload_baud,
            check=not args.no_check,
            attempts=args.attempts,
            model_path=args.model,
            log=progress(args),
        )
        if args.json:
            emit_json(facts)
        else:
            print(
                f"flashed '{graph.name}' (hash {facts['model_hash']}) to the {board.name} on {args.port} "
                f"in {facts['upload_s']} s: {facts['image_flash_bytes']} / {board.app_flash_bytes} B flash, "
                f"{facts['sram_needed_bytes']} / {board.sram_bytes} B RAM with the stack "
                f"(agent {facts['agent_flash_bytes']} B flash, {facts['agent_sram_bytes']} B RAM)"
                + ("; the board answers" if "info" in facts else "")
            )
        return 0


class BoardCommand(Command):
    name = "board"
    help = "boards: list them, or start a virtual one (`board simulate --board uno`)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        sub = p.add_subparsers(dest="board_command", metavar="ACTION", parser_class=type(p))
        sub.add_parser("list", help="the boards `flash` knows")
        s = sub.add_parser("simulate", help="start a virtual board; prints its serial port (a pty)")
        s.add_argument("--board", default="uno", help="board (default uno)")
        s.add_argument("--flash-file", metavar="FILE", help="keep the flash in FILE across runs")
        s.add_argument("--model", metavar="MODEL", help="qemu boards (no flashing): the model the agent runs")
        add_kernels(s)

    def run(self, args: argparse.Namespace) -> int:
        if args.board_command == "simulate":
            model = api.compile(args.model) if args.model else None
            return api.simulate_board(args.board, flash_file=args.flash_file, model=model, kernels=args.kernels)
        if args.board_command in (None, "list"):
            for name in api.board_names():
                b = api.board(name)
                virtual = "virtual twin: `ebnn-gen board simulate`" if b.simulator else ""
                print(f"{name:<10} {b.description}; {b.flash_tool}; agent at {b.agent_baud} baud {virtual}".rstrip())
            return 0
        print(f"error: unknown action {args.board_command}", file=sys.stderr)
        return 2
