"""Evaluation reports of a DDNN, all measured through the staged runtime.

:func:`evaluate` gives the dict that ``ebnn-gen ddnn eval --json`` writes:

* ``overall_accuracy``, ``local_exit_fraction``, ``exit_fraction`` (per exit);
* ``exit_accuracy``: each exit's accuracy on *every* sample (measured with no
  early exit, so every tier sees every sample, as the paper's tables);
  ``exited_accuracy``: accuracy on the samples that do exit there;
* ``device_accuracy``: each device alone (its own exit) against the object
  label, on every sample, as in the paper; ``device_accuracy_present``: on the
  samples whose object the device sees;
* ``bytes_per_sample``: ``to_aggregator`` (SCORES messages), ``to_cloud``
  (FEATURES messages of samples that do not exit locally), ``edge_to_cloud``
  when there is an edge tier, ``total``, ``raw`` (every view as uint8 pixels)
  and ``reduction`` (raw / total, null when nothing was sent);
* ``failed_devices``: devices missing in every run (``--fail``, or the
  model's ``training.absent_devices``: a model retrained without them);
* ``device_failure``: per device, the overall accuracy with that device's
  messages missing (same model, nothing retrained); ``worst_single_failure_accuracy``
  is the lowest of them;
* ``scaling``: the accuracy with the first k devices only, adding the least
  accurate first (the others failed);
* ``message_errors``: rejected messages by reason (0 on a clean network).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .datasets import MultiView
from .model import DDNN
from .runtime import DeviceStage, Outcome, StagedRuntime
from .train import THRESHOLD_GRID

SWEEP_THRESHOLDS = (0.0, *THRESHOLD_GRID)


def device_accuracy(stage: DeviceStage, k: int) -> tuple[list[float], list[float | None]]:
    """Per device: accuracy against the object label (all samples) and against its own view label (seen views)."""
    overall = [float(np.mean(stage.pred[:, d] == stage.y)) for d in range(stage.pred.shape[1])]
    present = []
    for d in range(stage.pred.shape[1]):
        v = (stage.y_views[:, d] >= 0) & (stage.y_views[:, d] < k)
        present.append(float(np.mean(stage.pred[v, d] == stage.y_views[v, d])) if v.any() else None)
    return overall, present


def outcome_summary(out: Outcome) -> dict[str, Any]:
    return {
        "overall_accuracy": out.overall_accuracy,
        "local_exit_fraction": out.exit_fraction["local"],
        "exit_fraction": out.exit_fraction,
        "exited_accuracy": out.exited_accuracy,
        "bytes_per_sample": out.bytes_per_sample(),
    }


Step = Callable[[], Any]


def _no_step() -> None:
    return None


def evaluate_steps(model: DDNN, failed: list[int] | None = None, with_scaling: bool = True) -> int:
    """The number of ``step()`` calls :func:`evaluate` makes (for a progress bar): one for the
    device stage and one per staged run."""
    down = set(model.config["training"]["absent_devices"] if failed is None else failed)
    live = model.num_devices - len(down)
    return 1 + 2 + (live if live > 1 else 0) + (2 * live if with_scaling else 0)


def scaling(
    rt: StagedRuntime,
    stage: DeviceStage,
    thresholds: dict[str, float],
    order: list[int],
    step: Step = _no_step,
) -> list[dict[str, Any]]:
    """Accuracy as devices are added in ``order`` (the devices not yet added, or not in it, are failed)."""
    dn = rt.model.num_devices
    rows = []
    for count in range(1, len(order) + 1):
        active = order[:count]
        failed = [d for d in range(dn) if d not in active]
        out = rt.run(stage, thresholds, failed=failed)
        step()
        every = rt.run(stage, {name: 0.0 for name in thresholds}, failed=failed).reached_accuracy()
        step()
        rows.append(
            {
                "devices": count,
                "active": sorted(active),
                "added": active[-1],
                "overall_accuracy": out.overall_accuracy,
                "local_exit_fraction": out.exit_fraction["local"],
                "exit_accuracy": every,
            }
        )
    return rows


def evaluate(
    model: DDNN,
    data: MultiView,
    *,
    devices: str = "c",
    threshold: float | None = None,
    runtime: StagedRuntime | None = None,
    stage: DeviceStage | None = None,
    with_scaling: bool = True,
    failed: list[int] | None = None,
    step: Step = _no_step,
) -> dict[str, Any]:
    """Every report of the staged run on ``data`` (see the module docstring).

    ``failed`` devices are missing in every run (default: the model's
    ``training.absent_devices``); the one-device failures and the scaling then
    cover the other devices. ``step`` is called after the device stage and after
    each staged run (:func:`evaluate_steps` times in all).
    """
    t0 = time.perf_counter()
    rt = runtime or StagedRuntime(model, devices=devices)
    stage = stage or rt.device_stage(data)
    step()
    th = model.calibration.threshold_map()
    if threshold is not None:
        th = {name: float(threshold) for name in th}
    k = model.num_classes
    down = sorted(set(model.config["training"]["absent_devices"] if failed is None else failed))
    live = [d for d in range(model.num_devices) if d not in down]
    out = rt.run(stage, th, failed=down)
    step()
    every = rt.run(stage, {name: 0.0 for name in th}, failed=down)
    step()
    dev_all, dev_present = device_accuracy(stage, k)
    report: dict[str, Any] = {
        "model": model.name,
        "dataset": data.name,
        "split": data.split,
        "samples": len(data),
        "devices": rt.devices,
        "thresholds": {name: th[name] for name in model.spec.exit_names if name in th},
        **outcome_summary(out),
        "exit_accuracy": every.reached_accuracy(),
        "device_accuracy": dev_all,
        "device_accuracy_present": dev_present,
        "best_device_accuracy": max(dev_all),
        "failed_devices": down,
        "device_failure": [],
        "message_errors": out.message_errors,
    }
    for d in live if len(live) > 1 else []:
        f = rt.run(stage, th, failed=[*down, d])
        step()
        report["device_failure"].append(
            {
                "device": d,
                "overall_accuracy": f.overall_accuracy,
                "local_exit_fraction": f.exit_fraction["local"],
                "bytes_per_sample": f.bytes_per_sample()["total"],
            }
        )
    report["worst_single_failure_accuracy"] = (
        min(e["overall_accuracy"] for e in report["device_failure"]) if report["device_failure"] else None
    )
    if with_scaling:
        order = [int(d) for d in np.argsort(np.asarray(dev_all), kind="stable") if int(d) in live]
        report["scaling"] = scaling(rt, stage, th, order, step)
    report["seconds"] = {"devices": stage.seconds, "total": time.perf_counter() - t0}
    return report


def sweep(
    model: DDNN,
    data: MultiView,
    *,
    devices: str = "c",
    thresholds: tuple[float, ...] = SWEEP_THRESHOLDS,
    runtime: StagedRuntime | None = None,
    stage: DeviceStage | None = None,
    failed: list[int] | None = None,
    step: Step = _no_step,
) -> dict[str, Any]:
    """The threshold sweep plus the reports of :func:`evaluate` at the model's thresholds
    (``step``: as for :func:`evaluate`, then once per threshold)."""
    rt = runtime or StagedRuntime(model, devices=devices)
    stage = stage or rt.device_stage(data)
    base = evaluate(model, data, runtime=rt, stage=stage, failed=failed, step=step)
    every = base["exit_accuracy"]
    rows = []
    for t in thresholds:
        out = rt.run(stage, {name: float(t) for name in base["thresholds"]}, failed=base["failed_devices"])
        step()
        row = {"threshold": float(t), **outcome_summary(out)}
        row["exit_accuracy"] = every
        rows.append(row)
    return {"evaluation": base, "threshold_sweep": rows}


def sweep_table(result: dict[str, Any]) -> str:
    """The threshold sweep as a Markdown table (the paper's Table I layout)."""
    names = list(result["evaluation"]["exit_accuracy"])
    head = "| T | exited locally (%) | " + " | ".join(f"{n} acc" for n in names) + " | overall acc | bytes/sample |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["threshold_sweep"]:
        accs = " | ".join(f"{r['exit_accuracy'][n]:.4f}" for n in names)
        lines.append(
            f"| {r['threshold']:.2f} | {100 * r['local_exit_fraction']:.2f} | {accs} | "
            f"{r['overall_accuracy']:.4f} | {r['bytes_per_sample']['total']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def failure_table(report: dict[str, Any]) -> str:
    lines = ["| failed device | device accuracy alone | overall accuracy | local exit (%) |", "|---|---|---|---|"]
    base = ", ".join(map(str, report.get("failed_devices") or [])) or "none"
    lines.append(f"| {base} | - | {report['overall_accuracy']:.4f} | {100 * report['local_exit_fraction']:.2f} |")
    for e in report["device_failure"]:
        d = e["device"]
        lines.append(
            f"| {d} | {report['device_accuracy'][d]:.4f} | {e['overall_accuracy']:.4f} | {100 * e['local_exit_fraction']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def scaling_table(report: dict[str, Any]) -> str:
    names = list(report["exit_accuracy"])
    lines = [
        "| devices | added | " + " | ".join(f"{n} acc" for n in names) + " | overall acc | local exit (%) |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    for r in report.get("scaling", []):
        accs = " | ".join(f"{r['exit_accuracy'][n]:.4f}" for n in names)
        lines.append(
            f"| {r['devices']} | {r['added']} | {accs} | {r['overall_accuracy']:.4f} | {100 * r['local_exit_fraction']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human-readable summary of :func:`evaluate`'s report."""
    b = report["bytes_per_sample"]
    lines = [
        f"{report['model']} on {report['dataset']} ({report['split']}, {report['samples']} samples, devices: {report['devices']})",
        f"  overall accuracy {report['overall_accuracy']:.4f}, local exits {100 * report['local_exit_fraction']:.2f} % "
        f"(T = {', '.join(f'{k} {v:g}' for k, v in report['thresholds'].items())})",
        "  exit accuracy (all samples): " + ", ".join(f"{k} {v:.4f}" for k, v in report["exit_accuracy"].items()),
        "  device accuracy: " + " ".join(f"{a:.3f}" for a in report["device_accuracy"]),
        f"  bytes/sample: to aggregator {b['to_aggregator']:.1f}, to cloud {b['to_cloud']:.1f}, "
        f"total {b['total']:.1f}, raw {b['raw']:.0f}"
        + (f" ({b['reduction']:.1f}x less)" if b["reduction"] is not None else ""),
        "  one device failed: " + " ".join(f"{e['overall_accuracy']:.4f}" for e in report["device_failure"]),
    ]
    if report.get("failed_devices"):
        lines.insert(1, f"  devices failed in every run: {', '.join(map(str, report['failed_devices']))}")
    if report["message_errors"]:
        lines.append(f"  rejected messages: {report['message_errors']}")
    return lines
