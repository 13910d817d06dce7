"""The documented Python API; the CLI is a thin shell over these functions.

Layers (docs/architecture.md): this module sits above the compiler core (config, nn, lower,
passes, ir, reference, codegen), the cost model (:mod:`.costs`), verification
(:mod:`.verification`) and the targets (:mod:`.targets`); nothing below imports it.  Every
function that names a target runs that target's fit check first (a model that does not fit
raises FitError, exit 2, with the numbers).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import batches, boards, checkpoint, codegen, costs, targets
from . import ir as ir_mod
from .boards import Board
from .boards.remote import PortOptions
from .checkpoint import data_hash, training_record
from .compiler import compile_model
from .errors import CodegenError
from .ir import Model
from .nn.model import DeviceSection
from .npyfile import load_npy
from .targets.base import RunResult, check_inputs, random_inputs
from .targets.fit import FitReport
from .verification import REFERENCE_CHECK_LIMIT, VerifyReport, compare, score_tolerance, torch_outputs

Log = Callable[[str], None]
ModelLike = torch.nn.Module | str | os.PathLike[str]

checkpoint.register_kind("device", DeviceSection)

__all__ = [
    "REFERENCE_CHECK_LIMIT",
    "FitReport",
    "RunResult",
    "VerifyReport",
    "PortOptions",
    "bench",
    "board",
    "board_bench",
    "board_names",
    "board_run",
    "build",
    "check_fits",
    "compare",
    "compile",
    "data_hash",
    "export",
    "flash",
    "load",
    "load_ir",
    "load_npy",
    "random_inputs",
    "report",
    "require_target",
    "run",
    "save",
    "simulate_board",
    "score_tolerance",
    "size",
    "target_descriptions",
    "target_names",
    "torch_outputs",
    "training_record",
    "verify",
    "write_files",
]


def build(config: dict[str, Any]) -> torch.nn.Module:
    """A trainable device section from a config dict (see :mod:`ebnn_codegen.config`)."""
    return DeviceSection(config)


def save(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Save a model as its config and state_dict (see :mod:`ebnn_codegen.checkpoint`)."""
    checkpoint.save(model, path)


def load(path: str | os.PathLike[str]) -> torch.nn.Module:
    """Load a checkpoint with ``torch.load(weights_only=True)``; the model is in eval mode.

    Device sections load always; other kinds once their package registered them
    (``import ebnn_codegen.ddnn`` for DDNN checkpoints)."""
    return checkpoint.load_model(path)


def _device(model: ModelLike) -> DeviceSection:
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    if not isinstance(model, DeviceSection):
        raise CodegenError(
            f"expected a device-section model, got {type(model).__name__}",
            hint="for DDNN checkpoints use `ebnn-gen ddnn export`",
        )
    return model.eval()


def compile(  # noqa: A001 - the public name the docs use
    model: ModelLike,
    *,
    name: str | None = None,
    log: Log | None = None,
    save_ir: str | os.PathLike[str] | None = None,
) -> Model:
    """Lower a model (or checkpoint path) through every pass; returns the final IR."""
    return compile_model(_device(model), name=name, log=log, save_ir=None if save_ir is None else Path(save_ir))


def _graph(model: ModelLike | Model) -> Model:
    return model if isinstance(model, Model) else compile(model)


def _samples(graph: Model, x: np.ndarray) -> np.ndarray:
    """``x`` checked against the model's input; an empty array is refused (nothing to run)."""
    x = check_inputs(graph, x)
    if len(x) == 0:
        raise CodegenError("the input holds no samples", hint="give at least one N×C×H×W input")
    return x


def export(
    model: ModelLike | Model,
    outdir: str | os.PathLike[str],
    *,
    name: str | None = None,
    kernels: str = "fast",
    log: Log | None = None,
    extra_files: dict[str, str] | None = None,
    target: str | None = None,
    format: str = "c",  # noqa: A002 - the CLI's --format
    sample: np.ndarray | str | os.PathLike[str] | None = None,
    license: str | None = None,  # noqa: A002 - the manifests' word
    source: str | os.PathLike[str] | None = None,
    agent: bool = False,
) -> list[Path]:
    """Write the C of a model into ``outdir`` (all files or none); returns the paths written.

    ``format``: "c" (the plain files and a README), "qonnx" (a QONNX model; needs the ``import``
    extra), or a package (arduino, platformio, esp-idf) whose example classifies ``sample`` (a
    uint8 C×H×W array, a .npy path or ``DATASET[:INDEX]``; by default a test image of the task
    the checkpoint records). ``target``: refuse first (FitError) if the model does not fit it;
    its numbers then go into the README. ``license``: an SPDX id for the package manifests.
    ``source``: the checkpoint the model came from (a path given as ``model`` is used).
    ``agent``: the Arduino formats also get the serial agent of ``ebnn-gen flash`` as an example."""
    if source is None and isinstance(model, (str, os.PathLike)):
        source = model
    graph = model if isinstance(model, Model) else compile(model, name=name, log=log)
    fit = check_fits(graph, target, kernels=kernels) if target is not None else None
    if format == "qonnx":
        from .exporters.qonnx import export_qonnx

        return export_qonnx(graph, outdir)
    from .packaging import package_files, samples

    files = package_files(
        graph,
        format,
        kernels,
        target,
        sample,
        task=samples.checkpoint_task(source) if source is not None else None,
        fit=fit.as_dict() if fit is not None else None,
        license=license,
        source=Path(source).name if source is not None else None,
        agent=agent,
    )
    files.update(extra_files or {})
    if log:
        log(f"[render] {len(files)} files -> {outdir}")
    return codegen.write_files(files, outdir)


def check_fits(
    model: ModelLike | Model, target: str, *, kernels: str = "fast", measure: bool | None = None
) -> FitReport:
    """Does the model fit ``target``'s chip?  FitError (exit 2) with the numbers if not.

    Predicted from the IR, then measured (code, constants, static RAM, peak stack) when the
    target's tools are installed (``measure=None``) or asked for (``measure=True``)."""
    return targets.get(target).check_fits(_graph(model), kernels, measure)


def run(model: ModelLike | Model, x: np.ndarray, *, target: str = "host", kernels: str = "fast") -> RunResult:
    """Run the generated C of ``model`` on uint8 inputs (N, C, H, W) on a target (fit checked first).

    ``result.stats["chip"]`` names the chip that ran the code; ``stats["chip_note"]`` says why
    when it is not the target's own chip."""
    graph = _graph(model)
    x = _samples(graph, x)
    t = targets.get(target)
    t.check_fits(graph, kernels)
    return batches.run_target(t, graph, x, kernels, target)


def verify(
    model: ModelLike,
    x: np.ndarray | None = None,
    *,
    samples: int = 64,
    target: str = "host",
    kernels: str = "fast",
    seed: int = 0,
    check_reference: bool | None = None,
    labels: np.ndarray | None = None,
) -> VerifyReport:
    """Run the generated C on ``x`` (``samples`` random uint8 inputs by default) and compare
    it with torch, bit for bit (see :func:`ebnn_codegen.verification.compare`); with
    ``labels`` (integers, one per input) the report also holds the C's accuracy."""
    dev = _device(model)
    graph = compile(dev)
    if x is None:
        if samples < 1:
            raise CodegenError(f"samples must be >= 1, got {samples}")
        x = random_inputs(graph.input_shape, samples, seed)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.shape != (len(x),):
            raise CodegenError(f"labels must be {len(x)} integers (one per input), got {labels.dtype} {labels.shape}")
    result = run(graph, x, target=target, kernels=kernels)
    rep = compare(graph, dev, check_inputs(graph, x), result, target, kernels, check_reference)
    if labels is not None:
        correct = int(np.sum(result.pred == labels))
        rep.details.update(accuracy=correct / len(x), correct=correct, labelled=len(x))
    return rep


def report(model: ModelLike | Model) -> dict[str, Any]:
    """Per-block MACs and memory, before touching a board (numbers computed from the IR)."""
    return costs.report(_graph(model))


def size(model: ModelLike | Model, target: str, *, kernels: str = "fast") -> dict[str, Any]:
    """Flash, static RAM and peak stack of the model measured on ``target`` (fit checked first)."""
    graph = _graph(model)
    t = targets.get(target)
    t.check_fits(graph, kernels)
    return t.size(graph, kernels)


def bench(model: ModelLike | Model, target: str, *, kernels: str = "fast", samples: int = 256) -> dict[str, Any]:
    """The cost of one inference on ``target``: cycles (AVR), instructions (qemu), time (host)."""
    graph = _graph(model)
    if samples < 1:
        raise CodegenError(f"samples must be >= 1, got {samples}")
    t = targets.get(target)
    t.check_fits(graph, kernels)
    return t.bench(graph, kernels, samples)


def require_target(name: str) -> None:
    """CodegenError (exit 2) listing the registered targets unless ``name`` is one of them."""
    targets.get(name)


def target_names() -> list[str]:
    return targets.names()


def target_descriptions() -> dict[str, str]:
    """{name: one line} of every registered target."""
    return {n: targets.get(n).description for n in targets.names()}


def write_files(files: dict[str, str], outdir: str | os.PathLike[str]) -> list[Path]:
    """Write text files into ``outdir`` atomically: all of them or none."""
    return codegen.write_files(files, outdir)


def load_ir(path: str | os.PathLike[str]) -> Model:
    return ir_mod.load(Path(path))


# -- boards: a model on a real (or virtual) board through the serial agent (docs/boards.md) --


def board_names() -> list[str]:
    return boards.names()


def board(name: str) -> Board:
    """The board called ``name`` (its chip, memories, flash tool, agent baud rate); CodegenError otherwise."""
    return boards.get(name)


def flash(
    model: ModelLike | Model,
    board_name: str,
    port: str,
    *,
    kernels: str = "fast",
    baud: int | None = None,
    upload_baud: int | None = None,
    check: bool = True,
    attempts: int | None = None,
    model_path: str = "",
    log: Log | None = None,
) -> dict[str, Any]:
    """Build model + serial agent for the board, upload it on ``port`` (``upload_baud``, the
    bootloader's; ``attempts`` to reach it), check that it answers INFO (``check``).

    Refused (exit 2, with the numbers) before touching the port if it does not fit; baud rates
    default to the board's."""
    from .boards.flash import flash as _flash

    b = boards.get(board_name)
    return _flash(_graph(model), b, port, kernels, baud, upload_baud, check, attempts, model_path, log)


def board_run(
    model: ModelLike | Model,
    x: np.ndarray,
    port: PortOptions,
    *,
    kernels: str = "fast",
    model_path: str = "",
    log: Log | None = None,
) -> RunResult:
    """Every input through the board flashed with ``model``: predictions, scores and each
    hidden block's bits, as :func:`run` gives them (``stats``: the link's throughput, retries)."""
    from .boards import remote

    graph = _graph(model)
    return remote.run(graph, _samples(graph, x), port, kernels, model_path, log=log)


def board_bench(
    model: ModelLike | Model, port: PortOptions, *, kernels: str = "fast", samples: int = 8, model_path: str = ""
) -> dict[str, Any]:
    """Cycles of one inference on the board's timer (mean of ``samples`` runs), the emulator's beside."""
    from .boards import remote

    return remote.bench(_graph(model), port, kernels, samples=samples, model_path=model_path)


def simulate_board(
    board_name: str, *, flash_file: str | None = None, model: ModelLike | Model | None = None, kernels: str = "fast"
) -> int:
    """Run a virtual board until interrupted (prints its pty).  The virtual Uno keeps its flash
    in ``flash_file``; a qemu board runs the agent built for ``model`` (it cannot be flashed)."""
    from .boards import vboard
    from .boards.firmware import build_agent

    b = boards.get(board_name)
    if b.simulator and "qemu" in b.simulator:
        if model is None:
            raise CodegenError(f"board '{b.name}' runs in qemu without flashing: give --model MODEL")
        return vboard.simulate_qemu(b, build_agent(_graph(model), b, kernels).elf)
    vboard.simulate(b, flash_file)
    return 0
