"""A DDNN from its config to a calibrated, recorded model: what ``ebnn-gen ddnn train`` runs.

:func:`train_from_config` reads the config (a dict or a JSON file), applies the
overrides, builds the model with the config's seed, loads the training split,
holds out ``training.validation`` of it, trains jointly, calibrates the message
scale on the training samples, chooses the exit threshold on the held-out ones
and records in ``model.meta["training"]`` how the model was made (command,
versions, data hash).  The caller saves it (``ebnn_codegen.save``).

Limits: one process, the torch device given; on one CPU thread the result is
reproducible bit for bit (docs/ddnn.md), across devices and thread counts it is
not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CodegenError
from . import datasets
from .datasets import MultiView
from .model import DDNN

Log = Callable[[str], None]
STEPS = 5


@dataclass(frozen=True)
class Overrides:
    """What a command line may change in a config's ``training`` section."""

    epochs: int | None = None
    seed: int | None = None
    without_devices: tuple[int, ...] | None = None  # sets training.absent_devices


@dataclass
class TrainResult:
    model: DDNN
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 0
    held_out: int = 0


def read_config(path: str | Path) -> Any:
    """A config file's JSON, with one clear error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise CodegenError(f"{p}: no such file")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CodegenError(f"{p}: not valid JSON ({exc})") from None


def with_overrides(config: Any, overrides: Overrides, where: str = "config") -> Any:
    """A copy of ``config`` with the overrides in its ``training`` section (validated by the model)."""
    if not isinstance(config, dict):
        return config  # DDNN() reports what is wrong with it
    config = dict(config)
    training = config.setdefault("training", {})
    if not isinstance(training, dict):
        raise CodegenError(f"{where}: training must be an object")
    training = config["training"] = dict(training)
    if overrides.epochs is not None:
        if overrides.epochs < 0:
            raise CodegenError(f"--epochs must be >= 0, got {overrides.epochs}")
        training["epochs"] = overrides.epochs
    if overrides.seed is not None:
        training["seed"] = overrides.seed
    if overrides.without_devices is not None:
        training["absent_devices"] = sorted(set(overrides.without_devices))
    return config


def check_views(model: DDNN, data: MultiView) -> None:
    want = (model.num_devices, *model.spec.device.input_shape)
    if tuple(data.x.shape[1:]) != want:
        raise CodegenError(
            f"dataset {data.name} has views {'x'.join(map(str, data.x.shape[1:]))}, "
            f"the model takes {'x'.join(map(str, want))} (devices x C x H x W)"
        )


def train_from_config(
    config: dict | str | Path,
    dataset: str,
    overrides: Overrides = Overrides(),
    *,
    limit: int | None = None,
    torch_device: str = "cpu",
    command: str = "",
    threads: int | None = None,
    log: Log | None = None,
) -> TrainResult:
    """Build, train, calibrate and record a DDNN (see the module docstring); ``log`` gets the
    numbered steps and the per-epoch lines."""
    import torch

    from ..checkpoint import data_hash, training_record
    from . import train as tr

    where = str(config) if isinstance(config, (str, Path)) else "config"
    raw = read_config(config) if isinstance(config, (str, Path)) else config
    cfg = with_overrides(raw, overrides, where)
    torch.manual_seed(int(cfg.get("training", {}).get("seed", 0)) if isinstance(cfg, dict) else 0)
    model = DDNN(cfg)
    say = log or (lambda _m: None)
    say(f"[1/{STEPS}] load {dataset} (train split)")
    data = datasets.load(dataset, "train", n=limit)
    check_views(model, data)
    training = model.config["training"]
    fit, val = tr.split_validation(data, float(training["validation"]))
    params = sum(p.numel() for p in model.parameters())
    held = 0 if val is None else len(val)
    say(f"[2/{STEPS}] train {training['epochs']} epochs on {len(fit)} samples ({held} held out), {params} parameters")
    t0 = time.perf_counter()
    hist = tr.train(model, fit, val=val, log=log, device=torch.device(torch_device))
    seconds = time.perf_counter() - t0
    say(f"[3/{STEPS}] calibrate the message scale")
    m = tr.calibrate_messages(model, fit)
    say(f"      scores sent as round(score * 2^{m}), {model.config['messages']['score_bits']}-bit")
    say(f"[4/{STEPS}] choose the exit threshold on the held-out samples")
    th = tr.choose_thresholds(model, val if val is not None else fit, devices="torch")
    say(f"      local threshold T = {th['local']:g}")
    model.meta["training"] = training_record(
        command,
        data_hash(data.x, data.y, data.y_views),
        dataset=dataset,
        samples=len(fit),
        epochs=int(training["epochs"]),
        seconds=round(seconds, 1),
        threads=threads if threads is not None else torch.get_num_threads(),
        torch_device=str(torch.device(torch_device)),
    )
    return TrainResult(model, hist.epochs, seconds, len(fit), held)
