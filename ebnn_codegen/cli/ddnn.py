"""``ebnn-gen ddnn``: train, evaluate, sweep and export distributed DNNs.

    ebnn-gen ddnn train CONFIG.json --dataset NAME -o MODEL.pt
    ebnn-gen ddnn eval MODEL.pt --dataset NAME [--threshold T] [--devices c|torch] --json OUT.json
    ebnn-gen ddnn sweep MODEL.pt --dataset NAME -o DIR
    ebnn-gen ddnn export MODEL.pt -o DIR [--target T]
    ebnn-gen ddnn serve device|gateway|cloud MODEL.pt --broker mqtt://HOST:PORT ...
    ebnn-gen ddnn system MODEL.pt --dataset NAME --broker mqtt://HOST:PORT --json OUT.json

Each action is a thin shell over :mod:`ebnn_codegen.ddnn`.
"""

from __future__ import annotations

import argparse
import json
import shlex

from .. import progress as progress_bars
from ..errors import CodegenError
from .base import Command, UsageError, add_quiet, emit_json, output_file, progress
from .ddnn_common import load_ddnn


def _threads(n: int) -> None:
    import torch

    if n < 1:
        raise UsageError(f"--threads must be a positive count, got {n}")
    torch.set_num_threads(n)


def _data(name: str, split: str, limit: int | None):
    from ..ddnn import datasets

    return datasets.load(name, split, n=limit)


def _check_views(model, data) -> None:
    from ..ddnn.pipeline import check_views

    check_views(model, data)


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, metavar="NAME", help="mnist-tiles, mvmc-like, ... or mvmc-npz:PATH")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N samples")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: results are reproducible bit for bit)"
    )


def _add_fail(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fail",
        type=int,
        action="append",
        default=None,
        metavar="D",
        help="device D is missing in every run (repeatable; default: the model's training.absent_devices)",
    )


def _model_and_data(args: argparse.Namespace):
    """The model, its ``--fail`` devices (checked before any data is read) and the data of ``eval``/``sweep``."""
    model = load_ddnn(args.model)
    fail = None
    if args.fail is not None:
        n = model.num_devices
        for d in args.fail:
            if not 0 <= d < n:
                raise UsageError(f"--fail {d}: the model has devices 0..{n - 1}")
        fail = sorted(set(args.fail))
        if len(fail) >= n:
            raise UsageError(f"--fail leaves no device: {fail}")
    data = _data(args.dataset, args.split, args.limit)
    _check_views(model, data)
    return model, fail, data


def _add_devices(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--devices",
        default="c",
        choices=("c", "torch"),
        help="run the device sections as generated C on the host (default) or in PyTorch",
    )


class Action:
    """One ``ebnn-gen ddnn`` action: ``help``, ``add(parser)``, ``run(args) -> exit code``."""

    help = ""

    def add(self, p: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


class Train(Action):
    help = "train a DDNN jointly from a config"

    def add(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("config", metavar="CONFIG.json", help="DDNN config (docs/ddnn.md)")
        _add_data(p)
        p.add_argument("-o", "--output", required=True, metavar="MODEL.pt")
        p.add_argument("--epochs", type=int, default=None, help="override training.epochs")
        p.add_argument("--seed", type=int, default=None, help="override training.seed")
        p.add_argument("--history", metavar="OUT.json", help="write the per-epoch history as JSON")
        p.add_argument(
            "--without-device",
            type=int,
            action="append",
            default=None,
            metavar="D",
            help="train for a system without device D (repeatable; sets training.absent_devices)",
        )
        p.add_argument(
            "--torch-device",
            default="cpu",
            metavar="DEV",
            help="torch device to train on: cpu (default), cuda, cuda:1, ... (results differ slightly from cpu's)",
        )

    def run(self, args: argparse.Namespace) -> int:
        import torch

        from .. import api
        from ..ddnn.pipeline import STEPS, Overrides, train_from_config

        log = progress(args)
        _threads(args.threads)
        if args.history:
            output_file(args.history)
        try:
            where = torch.device(args.torch_device)
        except RuntimeError:
            raise UsageError(f"--torch-device: unknown device {args.torch_device!r}") from None
        if where.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("--torch-device: CUDA is not available in this PyTorch")
        if where.type not in ("cpu", "cuda"):
            raise UsageError(f"--torch-device must be cpu or cuda[:N], got {args.torch_device!r}")
        without = tuple(args.without_device) if args.without_device is not None else None
        result = train_from_config(
            args.config,
            args.dataset,
            Overrides(epochs=args.epochs, seed=args.seed, without_devices=without),
            limit=args.limit,
            torch_device=str(where),
            command="ebnn-gen " + shlex.join(getattr(args, "_argv", [])),
            threads=args.threads,
            log=log,
        )
        if log:
            log(f"[{STEPS}/{STEPS}] save {args.output}")
        api.save(result.model, args.output)
        if args.history:
            emit_json({"seconds": result.seconds, "epochs": result.history}, args.history)
        print(f"trained in {result.seconds:.0f} s -> {args.output}")
        return 0


class Eval(Action):
    help = "evaluate a DDNN through the staged runtime (devices as generated C by default)"

    def add(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="MODEL.pt")
        _add_data(p)
        p.add_argument("--split", default="test", choices=("train", "test"))
        p.add_argument(
            "--threshold", type=float, default=None, metavar="T", help="exit threshold (default: the model's)"
        )
        _add_devices(p)
        _add_fail(p)
        p.add_argument("--json", metavar="OUT.json", help="write the report as JSON")
        p.add_argument("--no-scaling", action="store_true", help="skip the device-scaling runs")

    def run(self, args: argparse.Namespace) -> int:
        from ..ddnn import metrics

        _threads(args.threads)
        if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
            raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
        if args.json:
            output_file(args.json)
        model, fail, data = _model_and_data(args)
        steps = metrics.evaluate_steps(model, fail, with_scaling=not args.no_scaling)
        with progress_bars.bar(total=steps, desc=f"ddnn eval ({len(data)} samples)", unit="step") as bar:
            rep = metrics.evaluate(
                model,
                data,
                devices=args.devices,
                threshold=args.threshold,
                with_scaling=not args.no_scaling,
                failed=fail,
                step=bar.update,
            )
        for line in metrics.summary_lines(rep):
            print(line)
        if args.json:
            emit_json(rep, args.json)
        return 0


class Sweep(Action):
    help = "threshold sweep, failures and scaling: tables and PNG plots"

    def add(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="MODEL.pt")
        _add_data(p)
        p.add_argument("--split", default="test", choices=("train", "test"))
        p.add_argument("-o", "--output", required=True, metavar="DIR")
        _add_devices(p)
        _add_fail(p)
        p.add_argument("--prefix", default=None, help="file name prefix (default: ddnn_<dataset>)")

    def run(self, args: argparse.Namespace) -> int:
        from ..api import write_files
        from ..ddnn import metrics

        _threads(args.threads)
        try:
            from ..ddnn import plots
        except ImportError as exc:  # pragma: no cover - matplotlib is an extra
            raise CodegenError(f"plots need matplotlib ({exc})", hint="pip install 'ebnn-codegen[ddnn]'") from None
        model, fail, data = _model_and_data(args)
        log = progress(args)
        if log:
            log(f"[1/2] staged runs on {len(data)} samples (devices: {args.devices})")
        steps = metrics.evaluate_steps(model, fail, with_scaling=True) + len(metrics.SWEEP_THRESHOLDS)
        with progress_bars.bar(total=steps, desc=f"ddnn sweep ({len(data)} samples)", unit="step") as bar:
            res = metrics.sweep(model, data, devices=args.devices, failed=fail, step=bar.update)
        prefix = args.prefix or f"ddnn_{plots.slug(args.dataset.split(':')[0])}"
        ev = res["evaluation"]
        tables = (
            f"# {ev['model']} on {ev['dataset']} ({ev['split']}, {ev['samples']} samples, devices: {ev['devices']})\n\n"
            + "\n".join(metrics.summary_lines(ev))
            + "\n\n## Threshold sweep\n\n"
            + metrics.sweep_table(res)
            + "\n## One device failed\n\n"
            + metrics.failure_table(ev)
            + "\n## Scaling (least accurate device first)\n\n"
            + metrics.scaling_table(ev)
        )
        text = json.dumps(res, indent=2, default=_json_default) + "\n"
        written = write_files({f"{prefix}_sweep.json": text, f"{prefix}_sweep.md": tables}, args.output)
        if log:
            log("[2/2] plots")
        written += plots.plot_all(res, args.output, prefix)
        for path in written:
            print(path)
        return 0


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


class Export(Action):
    help = "C of every device section, the message codec and the gateway's local exit"

    def add(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="MODEL.pt")
        p.add_argument("-o", "--output", required=True, metavar="DIR")
        p.add_argument("--target", default=None, help="refuse device sections that do not fit this target")
        p.add_argument(
            "--kernels",
            default="fast",
            choices=("fast", "reference"),
            help="kernel strategy of the generated C: fast (default) or reference (plain loops, for checking)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from ..ddnn.export import export_ddnn

        model = load_ddnn(args.model)
        for path in export_ddnn(model, args.output, kernels=args.kernels, target=args.target, log=progress(args)):
            print(path)
        return 0


def _net_actions() -> dict[str, type]:
    from .ddnn_net import Serve, System

    return {"serve": Serve, "system": System}


ACTIONS: dict[str, type] = {"train": Train, "eval": Eval, "sweep": Sweep, "export": Export, **_net_actions()}


class DdnnCommand(Command):
    name = "ddnn"
    help = "distributed DNNs: train, eval, sweep, export"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="ddnn_action", metavar="ACTION", parser_class=type(parser))
        for name, cls in ACTIONS.items():
            action = cls()
            p = sub.add_parser(name, help=action.help, description=action.help)
            action.add(p)
            add_quiet(p)
            p.set_defaults(_ddnn_action=action)

    def run(self, args: argparse.Namespace) -> int:
        action = getattr(args, "_ddnn_action", None)
        if action is None:
            raise UsageError(f"ddnn needs an action: {', '.join(ACTIONS)} (see `ebnn-gen ddnn --help`)")
        return int(action.run(args) or 0)
