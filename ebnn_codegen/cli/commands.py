"""The subcommands. Each one parses, calls the API, and prints."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .. import api
from .. import ddnn as _ddnn  # noqa: F401 - registers the DDNN checkpoint kind (info, load)
from .. import progress as progress_bars
from ..errors import CodegenError
from . import board, tables
from .base import (
    Command,
    UsageError,
    add_kernels,
    add_model,
    add_target,
    emit_json,
    load_inputs,
    load_npy,
    load_samples,
    output_file,
    progress,
)


class Export(Command):
    name = "export"
    help = "generate the C files of a model (all files or none)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_model(p)
        p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
        p.add_argument("--name", help="C name prefix (default: the config's name)")
        p.add_argument("--target", default=None, help="refuse the model if it does not fit this target")
        add_kernels(p)
        p.add_argument(
            "--format",
            default="c",
            choices=("c", "arduino", "platformio", "esp-idf", "qonnx"),
            help="plain C files (default), a library/component for that ecosystem, or a QONNX model",
        )
        p.add_argument("--save-ir", metavar="DIR", help="also save the IR after every stage into DIR")
        p.add_argument(
            "--sample",
            metavar="X.npy|DATASET[:I]",
            help="the example's input: a uint8 C×H×W .npy, or a test image of mnist, fashion-mnist or digits "
            "(default: a test image of the dataset the checkpoint records, else a fixed random one)",
        )
        p.add_argument(
            "--license", metavar="SPDX", help="license id written into the package manifests (default: none)"
        )

    def run(self, args: argparse.Namespace) -> int:
        if args.sample is not None and args.format in ("c", "qonnx"):
            raise UsageError("--sample is the input of a package's example: use it with --format arduino, ...")
        log = progress(args)
        graph = api.compile(args.model, name=args.name, log=log, save_ir=args.save_ir)
        written = api.export(
            graph,
            args.output,
            kernels=args.kernels,
            log=log,
            target=args.target,
            format=args.format,
            sample=args.sample,
            license=args.license,
            source=args.model,
            agent=True,
        )
        for path in written:
            print(path)
        return 0


class Run(Command):
    name = "run"
    help = "run the generated C on inputs and save its outputs (.npz)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_model(p)
        p.add_argument("--input", required=True, metavar="X.npy", help="uint8 array N×C×H×W")
        p.add_argument("--output", required=True, metavar="OUT.npz", help="results (its folder must exist)")
        add_target(p)
        board.add_port_arguments(p)

    def run(self, args: argparse.Namespace) -> int:
        x = load_samples(args.input)
        out = output_file(args.output)
        if args.port:
            result = board.run_port(args, x)
        else:
            graph = api.compile(args.model, log=progress(args))
            result = api.run(graph, x, target=args.target, kernels=args.kernels)
        tmp = out.with_name(out.name + ".tmp.npz")
        try:
            np.savez(tmp, allow_pickle=False, **result.to_npz_dict())  # see ir.save
            tmp.replace(out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CodegenError(f"{out}: cannot write the output ({exc.strerror or exc})") from None
        note = result.stats.get("chip_note")
        where = args.port or args.target
        if note:
            where = f"{args.target} (emulated {result.stats['chip']}, NOT the target's chip: {note})"
        print(f"{len(x)} samples on {where}: predictions and scores -> {out}")
        return 0


class Verify(Command):
    name = "verify"
    help = "check that the generated C computes exactly what the PyTorch model computes"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_model(p)
        src = p.add_mutually_exclusive_group()
        src.add_argument(
            "--input",
            metavar="X.npy|DATASET[:SPLIT]",
            help="uint8 inputs N×C×H×W (default: random), or the images of mnist, fashion-mnist or digits "
            "(split test by default; their labels give the accuracy)",
        )
        src.add_argument("--samples", type=int, default=64, help="number of random inputs (default 64)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--labels", metavar="Y.npy", help="integer labels of --input: also report the accuracy")
        p.add_argument("--json", metavar="OUT.json", help="also write the report as JSON (its folder must exist)")
        p.add_argument("--against", metavar="MODEL.onnx", help="compare with the source ONNX/QONNX model's runtime")
        p.add_argument(
            "--reference",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="also compare with the IR reference interpreter (default: for up to 2048 inputs)",
        )
        add_target(p)
        board.add_port_arguments(p)

    def run(self, args: argparse.Namespace) -> int:
        x, labels = load_inputs(args.input) if args.input else (None, None)
        if x is None and args.samples < 1:
            raise CodegenError(f"--samples must be >= 1, got {args.samples}")
        if args.labels:
            if x is None:
                raise UsageError("--labels needs --input (the labels of those inputs)")
            labels = load_npy(args.labels)
        if args.json:
            output_file(args.json)
        if args.against:
            from .importer import verify_against

            return verify_against(args, x)
        if args.port:
            return board.verify_port(args, x)
        rep = api.verify(
            args.model,
            x,
            samples=args.samples,
            target=args.target,
            kernels=args.kernels,
            seed=args.seed,
            check_reference=args.reference,
            labels=labels,
        )
        print(rep.summary())
        if args.json:
            emit_json(rep.as_dict(), args.json)
        return 0 if rep.ok else 1


class Report(Command):
    name = "report"
    help = "per-block MACs, flash and RAM of a model (measured on a target with --target)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_model(p)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--target", default=None, help="also measure flash, RAM and peak stack on this target")
        add_kernels(p)

    def run(self, args: argparse.Namespace) -> int:
        graph = api.compile(args.model)
        rep = api.report(graph)
        if args.target is not None:
            progress_bars.note(f"report: building for {args.target} and measuring in its emulator ...")
            rep["target"] = api.size(graph, args.target, kernels=args.kernels)
        if args.json:
            emit_json(rep)
            return 0
        print(format_report(rep))
        return 0


def format_report(rep: dict[str, Any]) -> str:
    lines = [
        f"model {rep['name']}: input {'x'.join(map(str, rep['input_shape']))}, {rep['num_classes']} classes, "
        f"score scale 2^{rep['score_scale_log2']}",
        f"{'block':>5} {'type':<8} {'output':>12} {'binary MACs':>12} {'weights B':>10} {'thresh B':>9} {'buffer B':>9}",
    ]
    for b in rep["blocks"]:
        lines.append(
            f"{b['index']:>5} {b['type']:<8} {'x'.join(map(str, b['output_shape'])):>12} {b['binary_macs']:>12} "
            f"{b['weight_bytes']:>10} {b['threshold_bytes']:>9} {b['buffer_bytes']:>9}"
        )
    t = rep["totals"]
    lines.append(
        f"total: {t['binary_macs']} binary MACs, model constants (flash) {t['flash_bytes']} B, "
        f"static RAM (workspace) {t['static_ram_bytes']} B"
    )
    if "target" in rep:
        lines += ["", f"measured on {rep['target'].get('target', 'the target')}:", tables.render(rep["target"], "  ")]
    return "\n".join(lines)


class Bench(Command):
    name = "bench"
    help = "cost of one inference: cycles (AVR), instructions (qemu targets) or time (host)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_model(p)
        add_target(p)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--samples", type=int, default=256, help="inputs timed on the host (default 256)")
        board.add_port_arguments(p)

    def run(self, args: argparse.Namespace) -> int:
        if args.port:
            return board.bench_port(args)
        graph = api.compile(args.model)
        if args.samples < 1:
            raise CodegenError(f"--samples must be >= 1, got {args.samples}")
        if args.target != "host":
            progress_bars.note(f"bench: building for {args.target} and running in its emulator ...")
        data = api.bench(graph, args.target, kernels=args.kernels, samples=args.samples)
        if args.json:
            emit_json(data)
        else:
            print(tables.render(data))
        return 0


class Targets(Command):
    name = "targets"
    help = "list the targets"

    def run(self, args: argparse.Namespace) -> int:
        for t, desc in api.target_descriptions().items():
            print(f"{t:<12} {desc}")
        return 0


class Info(Command):
    name = "info"
    help = "show a checkpoint's config"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        add_model(p)

    def run(self, args: argparse.Namespace) -> int:
        model = api.load(args.model)
        emit_json(model.config)
        return 0


def _commands() -> list[type[Command]]:
    from .importer import Import

    cmds: list[type[Command]] = [
        Export,
        Run,
        Verify,
        Report,
        Bench,
        Targets,
        Info,
        Import,
        board.Flash,
        board.BoardCommand,
    ]
    try:
        from .ddnn import DdnnCommand

        cmds.append(DdnnCommand)
    except ImportError:
        pass
    return cmds


COMMANDS = _commands()
