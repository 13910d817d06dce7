"""The DDNN config: validation (errors name the field) and defaults.

A DDNN config is a JSON-compatible dict::

    {"name": "ddnn_tiles", "devices": 6, "classes": 10,
     "device": {"input": [1, 10, 14], "layers": [<a device-section config's layers>]},
     "share_weights": false,
     "feature_block": -1,
     "local": {"aggregator": "max"},
     "edge": null,
     "cloud": {"aggregator": "concat", "layers": [{"type": "bconv", ...}, ..., {"type": "exit", "classes": 10}]},
     "loss_weights": {"device": 1.0, "local": 1.0, "edge": 1.0, "cloud": 1.0},
     "thresholds": {"local": 0.8, "edge": 0.8},
     "messages": {"score_bits": 8, "score_frac_bits": null},
     "training": {"epochs": 10, "batch_size": 128, "lr": 0.003, "device_dropout": 0.15,
                  "shift": 0, "tiles": null, ...}}

* ``device`` is a device-section config (:mod:`ebnn_codegen.config`) without a
  name: device ``d`` is compiled as ``<name>_dev<d>``.  Its exit has
  ``classes`` outputs.  With ``share_weights`` one section serves every device.
* ``feature_block`` is the device hidden block whose packed output a device
  sends upstream when a sample does not exit locally (default: the last).
* ``local.aggregator`` combines the devices' exit scores: ``max`` (MP),
  ``avg`` (AP) or ``concat`` (CC: concatenation, then a binary linear layer and
  batch norm).
* ``cloud`` (and each edge) is a section of binary blocks (``bconv``,
  ``blinear``, then ``exit``) over the aggregated feature maps: ``concat``
  along channels, or element-wise ``max``/``avg``.  The cloud may also use
  ``grid`` with ``"grid": [rows, columns]``: the maps are laid out as a
  mosaic, source ``s`` at row ``s // columns``, column ``s % columns`` (an
  extension of the paper's aggregators for views that tile one scene, such as
  ``mnist-tiles``; a missing source leaves zeros in its cell).
* ``edge`` (optional): ``{"groups": [[0, 1, 2], [3, 4, 5]], "aggregator":
  "concat", "exit_aggregator": "max", "layers": [...]}``; each group of devices
  feeds one edge section (at least one hidden block: its output is what the
  edge sends to the cloud), and the edge exit combines the edges' scores.
* ``training.shift`` augments the training views by a random translation of up
  to that many pixels (zero fill), the same for every view of a sample; with
  ``training.tiles: [rows, columns]`` the views are first put back together as
  the tiles of one image, which is shifted as a whole and cut again.
* ``training.absent_devices``: devices left out of training altogether (always
  dropped): the model is trained for a system without them, as the paper
  retrained without a failed camera.  Evaluations treat them as failed.
* ``training.recalibrate_bn``: after the last epoch, set every batch norm's
  running statistics to their average over every batch of the (unshifted)
  training samples, devices dropped as in training
  (:func:`ebnn_codegen.ddnn.train.recalibrate_batch_norm`), instead of the
  exponential average of the last few batches.
* ``messages.score_frac_bits`` is the fixed-point position ``m`` of the scores
  a device sends (value = round(score * 2**m)); ``null`` means "calibrate after
  training" (:func:`ebnn_codegen.ddnn.train.calibrate_messages`).

:func:`parse_ddnn_config` returns a :class:`DdnnSpec` whose ``config`` is the
normalised dict (defaults filled in), which is what a checkpoint stores.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import (
    MAX_CHANNELS,
    MAX_SPATIAL,
    BlockStack,
    LayerSpec,
    ModelSpec,
    check_identifier,
    check_int,
    parse_config,
)
from ..errors import ConfigError

AGGREGATORS = ("max", "avg", "concat")
# The cloud may also lay the maps out as a mosaic (for views that tile one scene).
CLOUD_AGGREGATORS = (*AGGREGATORS, "grid")
MAX_DEVICES = 63  # the sender id of a message has 6 bits (see messages.py)
SCORE_BITS = (8, 16)

DEFAULTS: dict[str, Any] = {
    "share_weights": False,
    "feature_block": -1,
    "local": {"aggregator": "max"},
    "edge": None,
    "loss_weights": {"device": 1.0, "local": 1.0, "edge": 1.0, "cloud": 1.0},
    "thresholds": {"local": 0.8, "edge": 0.8},
    "messages": {"score_bits": 8, "score_frac_bits": None},
    "training": {
        "epochs": 10,
        "batch_size": 128,
        "lr": 0.003,
        "weight_decay": 0.0,
        "device_dropout": 0.15,
        "validation": 0.1,
        "min_local_exit": 0.6,
        "seed": 0,
        "shift": 0,
        "tiles": None,
        "recalibrate_bn": False,
        "absent_devices": [],
    },
}

_TOP_KEYS = {"name", "devices", "classes", "device", "cloud", "meta", *DEFAULTS}


@dataclass(frozen=True)
class SectionSpec(BlockStack):
    """An edge or cloud section: aggregator over feature maps, then binary blocks."""

    aggregator: str
    in_shape: tuple[int, int, int]  # after aggregation
    layers: tuple[LayerSpec, ...]  # hidden blocks then the exit
    grid: tuple[int, int] | None = None  # rows, columns of the 'grid' aggregator

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """Shape of the last hidden block's output (what an edge sends on)."""
        return self.hidden[-1].out_shape if self.hidden else self.in_shape


@dataclass(frozen=True)
class DdnnSpec:
    name: str
    num_devices: int
    num_classes: int
    device: ModelSpec  # device 0's section (every device has the same architecture)
    share_weights: bool
    feature_block: int  # non-negative index into device.hidden
    local_aggregator: str
    edge_groups: tuple[tuple[int, ...], ...] | None
    edge_exit_aggregator: str
    edge: SectionSpec | None
    cloud: SectionSpec
    config: dict = field(compare=False, repr=False)

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return self.device.hidden[self.feature_block].out_shape

    @property
    def exit_names(self) -> tuple[str, ...]:
        return ("local", "edge", "cloud") if self.edge is not None else ("local", "cloud")

    def device_config(self, d: int) -> dict:
        cfg = copy.deepcopy(self.config["device"])
        cfg["name"] = f"{self.name}_dev{d}"
        return cfg


def _number(value: Any, where: str, minimum: float = 0.0, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if value != value or value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{where} must be {bound}, got {value!r}")
    return float(value)


def _object(value: Any, where: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be an object, got {value!r}")
    unknown = sorted(set(value) - allowed, key=repr)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return value


def _aggregator(value: Any, where: str) -> str:
    if value not in AGGREGATORS:
        raise ConfigError(f"{where} must be one of {', '.join(AGGREGATORS)}, got {value!r}")
    return value


def _merge(defaults: dict, given: Any, where: str) -> dict:
    out = copy.deepcopy(defaults)
    if given is None:
        return out
    _object(given, where, set(defaults))
    out.update(copy.deepcopy(given))
    return out


def section_layers(layers: Any, in_shape: tuple[int, int, int], where: str) -> tuple[LayerSpec, ...]:
    """Validate the binary blocks of an edge/cloud section whose input is ``in_shape``.

    The core parser validates device sections, whose first block reads uint8
    pixels; a section here reads ±1 maps, so it is parsed behind a 1×1
    placeholder ``conv`` (one input channel, ``C`` filters) whose output has the
    section's input shape, and error paths are renumbered.
    """
    if not isinstance(layers, list) or not layers:
        raise ConfigError(f"{where}.layers must be a non-empty list")
    c, h, w = in_shape
    if c > MAX_CHANNELS or h > MAX_SPATIAL or w > MAX_SPATIAL:
        raise ConfigError(
            f"{where}: the aggregated input {c}x{h}x{w} exceeds the limits "
            f"({MAX_CHANNELS} channels, {MAX_SPATIAL} pixels a side)"
        )
    cfg = {
        "name": "section",
        "input": [1, h, w],
        "layers": [{"type": "conv", "out_channels": c, "kernel": 1}, *layers],
    }
    try:
        spec = parse_config(cfg)
    except ConfigError as exc:
        msg = re.sub(r"\blayers\[(\d+)\]", lambda m: f"{where}.layers[{int(m.group(1)) - 1}]", exc.message)
        msg = msg.replace("config.input", f"{where} input")
        raise ConfigError(msg, hint=exc.hint) from None
    return spec.layers[1:]


def parse_ddnn_config(config: Any) -> DdnnSpec:
    """Validate a DDNN config; return the spec with the normalised config."""
    if not isinstance(config, dict):
        raise ConfigError(f"DDNN config must be an object, got {type(config).__name__}")
    _object(config, "config", _TOP_KEYS)
    for key in ("name", "devices", "classes", "device", "cloud"):
        if key not in config:
            raise ConfigError(f"config: missing field '{key}'")
    name = check_identifier(config["name"], "config.name")
    n = check_int(config["devices"], "config.devices", 1, MAX_DEVICES)
    k = check_int(config["classes"], "config.classes", 2, 127)
    cfg: dict[str, Any] = {"name": name, "devices": n, "classes": k}

    dev = _object(config["device"], "config.device", {"input", "layers"})
    cfg["device"] = copy.deepcopy(dev)
    try:
        device = parse_config({"name": f"{name}_dev0", **dev})
    except ConfigError as exc:
        raise ConfigError(f"config.device: {exc.message}", hint=exc.hint) from None
    if not device.hidden:
        raise ConfigError("config.device needs at least one hidden block (its output is what a device sends upstream)")
    if device.num_classes != k:
        raise ConfigError(f"config.device: exit has {device.num_classes} classes, config.classes is {k}")

    share = config.get("share_weights", DEFAULTS["share_weights"])
    if not isinstance(share, bool):
        raise ConfigError(f"config.share_weights must be true or false, got {share!r}")
    cfg["share_weights"] = share
    fb = check_int(config.get("feature_block", -1), "config.feature_block", -len(device.hidden), len(device.hidden) - 1)
    fb = fb % len(device.hidden)
    cfg["feature_block"] = fb
    feat = device.hidden[fb].out_shape

    local = _merge(DEFAULTS["local"], config.get("local"), "config.local")
    _aggregator(local["aggregator"], "config.local.aggregator")
    cfg["local"] = local

    edge_cfg = config.get("edge")
    edge = None
    groups: tuple[tuple[int, ...], ...] | None = None
    edge_exit = "max"
    cloud_in_unit = feat
    cloud_sources = n
    if edge_cfg is not None:
        e = _object(edge_cfg, "config.edge", {"groups", "aggregator", "exit_aggregator", "layers"})
        for key in ("groups", "layers"):
            if key not in e:
                raise ConfigError(f"config.edge: missing field '{key}'")
        if not isinstance(e["groups"], list) or not e["groups"]:
            raise ConfigError("config.edge.groups must be a non-empty list of lists of device indices")
        seen: set[int] = set()
        gl = []
        for gi, g in enumerate(e["groups"]):
            if not isinstance(g, list) or not g:
                raise ConfigError(f"config.edge.groups[{gi}] must be a non-empty list of device indices")
            for j, d in enumerate(g):
                check_int(d, f"config.edge.groups[{gi}][{j}]", 0, n - 1)
                if d in seen:
                    raise ConfigError(f"config.edge.groups[{gi}][{j}]: device {d} is in more than one group")
                seen.add(d)
            gl.append(tuple(g))
        if seen != set(range(n)):
            raise ConfigError(f"config.edge.groups must cover every device; missing {sorted(set(range(n)) - seen)}")
        sizes = {len(g) for g in gl}
        agg = _aggregator(e.get("aggregator", "concat"), "config.edge.aggregator")
        if agg == "concat" and len(sizes) != 1:
            raise ConfigError("config.edge: 'concat' needs groups of equal size (one edge architecture)")
        edge_exit = e.get("exit_aggregator", "max")
        if edge_exit not in ("max", "avg"):
            raise ConfigError(f"config.edge.exit_aggregator must be max or avg, got {edge_exit!r}")
        size = next(iter(sizes)) if agg == "concat" else 1
        e_in = (feat[0] * size, feat[1], feat[2])
        e_layers = section_layers(e["layers"], e_in, "config.edge")
        if len(e_layers) < 2:
            raise ConfigError(
                "config.edge.layers needs at least one hidden block before the exit (it is what an edge sends)"
            )
        if e_layers[-1].out_channels != k:
            raise ConfigError(f"config.edge: exit has {e_layers[-1].out_channels} classes, config.classes is {k}")
        edge = SectionSpec(agg, e_in, e_layers)
        groups = tuple(gl)
        cfg["edge"] = {
            "groups": [list(g) for g in gl],
            "aggregator": agg,
            "exit_aggregator": edge_exit,
            "layers": copy.deepcopy(e["layers"]),
        }
        cloud_in_unit = edge.out_shape
        cloud_sources = len(gl)
    else:
        cfg["edge"] = None

    c = _object(config["cloud"], "config.cloud", {"aggregator", "grid", "layers"})
    if "layers" not in c:
        raise ConfigError("config.cloud: missing field 'layers'")
    cagg = c.get("aggregator", "concat")
    if cagg not in CLOUD_AGGREGATORS:
        raise ConfigError(f"config.cloud.aggregator must be one of {', '.join(CLOUD_AGGREGATORS)}, got {cagg!r}")
    grid: tuple[int, int] | None = None
    if cagg == "grid":
        g = c.get("grid")
        if not isinstance(g, list) or len(g) != 2:
            raise ConfigError(f"config.cloud.grid must be [rows, columns] for the 'grid' aggregator, got {g!r}")
        grid = (
            check_int(g[0], "config.cloud.grid[0]", 1, MAX_DEVICES),
            check_int(g[1], "config.cloud.grid[1]", 1, MAX_DEVICES),
        )
        if grid[0] * grid[1] != cloud_sources:
            raise ConfigError(
                f"config.cloud.grid {list(grid)} has {grid[0] * grid[1]} cells for {cloud_sources} sources"
            )
        c_in = (cloud_in_unit[0], cloud_in_unit[1] * grid[0], cloud_in_unit[2] * grid[1])
    elif "grid" in c:
        raise ConfigError("config.cloud.grid is only used by the 'grid' aggregator")
    else:
        mult = cloud_sources if cagg == "concat" else 1
        c_in = (cloud_in_unit[0] * mult, cloud_in_unit[1], cloud_in_unit[2])
    c_layers = section_layers(c["layers"], c_in, "config.cloud")
    if c_layers[-1].out_channels != k:
        raise ConfigError(f"config.cloud: exit has {c_layers[-1].out_channels} classes, config.classes is {k}")
    cloud = SectionSpec(cagg, c_in, c_layers, grid)
    cfg["cloud"] = {"aggregator": cagg, "layers": copy.deepcopy(c["layers"])}
    if grid is not None:
        cfg["cloud"]["grid"] = list(grid)

    lw = _merge(DEFAULTS["loss_weights"], config.get("loss_weights"), "config.loss_weights")
    for key, v in lw.items():
        _number(v, f"config.loss_weights.{key}", 0.0, 1e3)
    cfg["loss_weights"] = lw
    th = _merge(DEFAULTS["thresholds"], config.get("thresholds"), "config.thresholds")
    for key, v in th.items():
        _number(v, f"config.thresholds.{key}", 0.0, 1.0)
    cfg["thresholds"] = th
    msg = _merge(DEFAULTS["messages"], config.get("messages"), "config.messages")
    if msg["score_bits"] not in SCORE_BITS:
        raise ConfigError(f"config.messages.score_bits must be 8 or 16, got {msg['score_bits']!r}")
    if msg["score_frac_bits"] is not None:
        check_int(msg["score_frac_bits"], "config.messages.score_frac_bits", -16, 24)
    cfg["messages"] = msg
    tr = _merge(DEFAULTS["training"], config.get("training"), "config.training")
    check_int(tr["epochs"], "config.training.epochs", 0, 10_000)
    check_int(tr["batch_size"], "config.training.batch_size", 2, 65536)
    _number(tr["lr"], "config.training.lr", 0.0, 10.0)
    _number(tr["weight_decay"], "config.training.weight_decay", 0.0, 1.0)
    _number(tr["device_dropout"], "config.training.device_dropout", 0.0, 0.9)
    _number(tr["validation"], "config.training.validation", 0.0, 0.5)
    _number(tr["min_local_exit"], "config.training.min_local_exit", 0.0, 1.0)
    check_int(tr["seed"], "config.training.seed", 0)
    check_int(tr["shift"], "config.training.shift", 0, 16)
    absent = tr["absent_devices"]
    if not isinstance(absent, list):
        raise ConfigError(f"config.training.absent_devices must be a list of device numbers, got {absent!r}")
    for i, d in enumerate(absent):
        check_int(d, f"config.training.absent_devices[{i}]", 0, n - 1)
    if len(set(absent)) != len(absent):
        raise ConfigError(f"config.training.absent_devices lists a device twice: {absent}")
    if len(absent) >= n:
        raise ConfigError(f"config.training.absent_devices leaves no device: {absent}")
    tr["absent_devices"] = sorted(absent)
    if not isinstance(tr["recalibrate_bn"], bool):
        raise ConfigError(f"config.training.recalibrate_bn must be true or false, got {tr['recalibrate_bn']!r}")
    if tr["tiles"] is not None:
        t = tr["tiles"]
        if not isinstance(t, list) or len(t) != 2:
            raise ConfigError(f"config.training.tiles must be null or [rows, columns], got {t!r}")
        check_int(t[0], "config.training.tiles[0]", 1, MAX_DEVICES)
        check_int(t[1], "config.training.tiles[1]", 1, MAX_DEVICES)
        if t[0] * t[1] != n:
            raise ConfigError(f"config.training.tiles {t} has {t[0] * t[1]} tiles for {n} devices")
    cfg["training"] = tr
    if "meta" in config:
        cfg["meta"] = copy.deepcopy(config["meta"])

    return DdnnSpec(
        name=name,
        num_devices=n,
        num_classes=k,
        device=device,
        share_weights=share,
        feature_block=fb,
        local_aggregator=local["aggregator"],
        edge_groups=groups,
        edge_exit_aggregator=edge_exit,
        edge=edge,
        cloud=cloud,
        config=cfg,
    )
