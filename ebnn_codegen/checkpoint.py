"""Checkpoints: the config and the state_dict, nothing else, read with ``weights_only=True``.

Layout of the saved object (a plain dict of strings, numbers and tensors)::

    {"format": "ebnn-codegen", "version": 1, "kind": "device" | "ddnn",
     "config": {...}, "state_dict": {name: tensor}}

Model kinds are dispatched through a registry: ``register_kind("device", DeviceSection)``
(done by :mod:`ebnn_codegen.api`), ``register_kind("ddnn", DDNN)`` (done by
:mod:`ebnn_codegen.ddnn` when it is imported); the core never imports an add-on.

Loading never runs code: ``torch.load(path, weights_only=True)`` refuses any
pickle that would construct objects other than tensors and containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, CodegenError, ConfigError

FORMAT = "ebnn-codegen"
VERSION = 1


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:200]


def _load_failure(path: Path, exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line."""
    text = str(exc)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text) or re.search(
        r"Unsupported (?:global|class):? (\S+)", text
    )
    if found:
        what = found.group(1).strip(".,")
        return (
            f"refused to load: the file asks to call or build '{what}', which is not a tensor "
            "or plain data (loading it unsafely would run code)"
        )
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        magic = b""
    if magic == b"PK\x03\x04":
        return "not a readable checkpoint: a damaged or truncated archive (was the copy complete?)"
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        return "not a checkpoint: neither a PyTorch archive nor a pickle of tensors and plain data"
    return f"not a readable checkpoint ({_describe(exc)})"


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint file; raise CheckpointError naming the problem."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, not a checkpoint")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file, not a checkpoint")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or hostile files
        raise CheckpointError(f"{p}: {_load_failure(p, exc)}") from None
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{p}: holds only a state_dict (no config), not an ebnn-codegen checkpoint",
            hint="save models with ebnn_codegen.save(model, path), which stores the config with the weights",
        )
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{p}: not an ebnn-codegen checkpoint (expected a dict with format '{FORMAT}')",
            hint="save models with ebnn_codegen.save(model, path)",
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{p}: unsupported checkpoint version {obj.get('version')!r} (expected {VERSION})")
    for key in ("config", "state_dict", "kind"):
        if key not in obj:
            raise CheckpointError(f"{p}: checkpoint has no '{key}'")
    if not isinstance(obj["config"], dict):
        raise CheckpointError(f"{p}: checkpoint config is not an object")
    sd = obj["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{p}: checkpoint state_dict must map names to tensors")
    for key, value in sd.items():  # weights_only still admits sparse, nested and meta tensors
        if value.is_nested or value.layout != torch.strided or value.device.type != "cpu":
            what = "nested" if value.is_nested else str(value.layout if value.layout != torch.strided else value.device)
            raise CheckpointError(f"{p}: state_dict '{key}' is a {what} tensor; only dense tensors are supported")
    return obj


def load_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` strictly, turning mismatches into one clear CheckpointError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing:
        raise CheckpointError(f"{source}: state_dict does not match its config: missing '{missing[0]}'")
    if unexpected:
        raise CheckpointError(f"{source}: state_dict does not match its config: unexpected '{unexpected[0]}'")
    for key, value in own.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: state_dict does not match its config: '{key}' has shape "
                f"{list(state_dict[key].shape)}, the config needs {list(value.shape)}"
            )
        if state_dict[key].dtype.is_floating_point != value.dtype.is_floating_point:
            raise CheckpointError(f"{source}: '{key}' has dtype {state_dict[key].dtype}, expected {value.dtype}")
    model.load_state_dict(state_dict, strict=True)


ModelFactory = Callable[[dict[str, Any]], torch.nn.Module]

_KINDS: dict[str, ModelFactory] = {}
PROVIDERS = {"ddnn": "ebnn_codegen.ddnn"}
"""The module that registers each add-on kind (named in the error when it is not imported)."""


def register_kind(kind: str, factory: ModelFactory) -> None:
    """Let :func:`load_model` build checkpoints of ``kind`` with ``factory(config)``."""
    _KINDS[kind] = factory


def kinds() -> list[str]:
    return sorted(_KINDS)


def load_model(path: str | os.PathLike[str]) -> torch.nn.Module:
    """Read a checkpoint and build its model through the kind registry; eval mode."""
    obj = read_checkpoint(path)
    kind = obj["kind"]
    factory = _KINDS.get(kind)
    if factory is None:
        provider = PROVIDERS.get(kind)
        raise CheckpointError(
            f"{path}: unknown model kind {kind!r}"
            + (f" (the kind is registered by {provider}: import it first)" if provider else ""),
            hint=f"import {provider}" if provider else None,
        )
    try:
        model = factory(obj["config"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: invalid config: {exc.message}", hint=exc.hint) from None
    load_state(model, obj["state_dict"], str(path))
    return model.eval()


def model_kind(model: torch.nn.Module) -> str:
    return getattr(model, "checkpoint_kind", "device")


def save(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Save ``model`` as its config plus its state_dict (written atomically)."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise CodegenError("save() needs a model built by ebnn_codegen.build (it carries its config)")
    json.dumps(config)  # the config must stay JSON-compatible
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "kind": model_kind(model),
        "config": config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, p)


def content_hash(model: torch.nn.Module) -> str:
    """A hash of the config and the weights (independent of how the file was written)."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config, sort_keys=True, separators=(",", ":")).encode())
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
