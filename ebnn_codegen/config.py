"""The model config: validation with errors that name the field, and shape inference.

A config is a JSON-compatible dict::

    {"name": "mnist_small", "input": [C, H, W], "layers": [
        {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1,
         "pool": {"kernel": 2, "stride": 2}},
        {"type": "bconv", "out_channels": 16, "kernel": [3, 3], "stride": 1},
        {"type": "blinear", "out_features": 32},
        {"type": "exit", "classes": 10}]}

A hidden block may say ``"threshold": true``: its batch norm and sign are then
given as one integer threshold and direction per channel (the state_dict's
``act.threshold``/``act.direction``), as imported models carry them; such a
block is not trainable.

``conv`` must come first (its input is uint8 pixels), ``exit`` last; ``bconv``
blocks may only follow ``conv``/``bconv`` blocks, ``blinear`` blocks any
hidden block.  Sizes follow PyTorch (floor mode): ``out = (in + 2p - k) // s + 1``.
Max-pool padding is -inf and, as in PyTorch, at most half the pool kernel.
``"pool": {..., "after_sign": true}`` pools the block's ±1 outputs (conv -> BN -> sign ->
max-pool) instead of its accumulators; lowering makes it exact for the kernels (a channel
whose batch norm decreases pools the minimum: its weights are negated).

:func:`parse_config` returns a :class:`ModelSpec` with every field normalised
and every shape computed; it raises :class:`~ebnn_codegen.errors.ConfigError`
with the path of the offending field (``layers[2].kernel``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

# Limits that keep lowering bounded in time and memory (see docs/architecture.md).
MAX_INPUT_CHANNELS = 64
MAX_SPATIAL = 1024
MAX_CHANNELS = 4096
MAX_KERNEL = 64
MAX_LINEAR_INPUT_SIDE = 255  # a linear block's kernel is its input's H x W: a uint8_t in ebnn_block_t
MAX_FAN_IN = 1 << 16  # binary fan-in C*kh*kw of one output (int32 accumulators, int16 where it fits)
MAX_FIRST_RANGE = 1 << 23  # 255*C*kh*kw: integers evaluated through batch norm, exact in float32
MAX_MACS = 10**10
MAX_CLASSES = 1024
# The torch model holds every weight as float32 (4 bytes), the C image as 1 bit.
MAX_WEIGHTS = 1 << 25  # 128 MiB in torch, 4 MiB packed: more than any MCU flash
# step_lower evaluates each hidden channel's batch norm on all 2*bound+1 accumulator
# values (about 10 million evaluations per second): at most about half a minute.
MAX_LOWERING_EVALS = 1 << 28
# Every generated name starts with the model name, so these would collide with
# the runtime's files and header guard (compared case-insensitively, as some file systems do).
RESERVED_NAMES = frozenset({"ebnn_runtime"})

HIDDEN_TYPES = ("conv", "bconv", "blinear")
LAYER_TYPES = HIDDEN_TYPES + ("exit",)

C_KEYWORDS = frozenset(
    """auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef union
    unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary
    _Noreturn _Static_assert _Thread_local alignas alignof bool constexpr false nullptr
    static_assert thread_local true typeof typeof_unqual _BitInt _Decimal128 _Decimal32
    _Decimal64 asm fortran main""".split()
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}\Z")


def check_identifier(name: Any, what: str = "name") -> str:
    """Return ``name`` if it is a valid, non-reserved C identifier, else raise ConfigError.

    Names are also used upper-cased as macro prefixes (``_net`` -> ``_NET_H``),
    so every name starting with ``_`` is refused (reserved to the implementation),
    and so are the names of the runtime's own files (:data:`RESERVED_NAMES`).
    """
    if not isinstance(name, str):
        raise ConfigError(f"{what} must be a string, got {type(name).__name__}")
    if name.lower() in RESERVED_NAMES:
        raise ConfigError(
            f"{what} '{name}' is reserved: the runtime's files and header guard use it",
            hint=f"use another name, e.g. '{name}_model' (export --name NAME overrides it)",
        )
    if not _IDENT.match(name) or name in C_KEYWORDS or name.startswith("_"):
        shown = name.encode("unicode_escape").decode("ascii")[:60]
        bad = re.search(r"[^A-Za-z0-9_]", name)
        if not name:
            reason = "it is empty"
        elif bad:
            char = bad.group().encode("unicode_escape").decode("ascii")
            reason = f"it contains '{char}' (only letters, digits and '_' are allowed)"
        elif name[0].isdigit():
            reason = "it starts with a digit"
        elif name.startswith("_"):
            reason = "it starts with '_' (reserved to the C implementation)"
        elif name in C_KEYWORDS:
            reason = "it is a C keyword or a reserved name"
        else:
            reason = "it is longer than 48 characters"
        suggestion = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")[:42] or "model"
        if not re.match(r"[A-Za-z]", suggestion):
            suggestion = "m_" + suggestion
        if suggestion in C_KEYWORDS:
            suggestion += "_model"
        raise ConfigError(
            f"{what} '{shown}' is not a valid C identifier: {reason}",
            hint=f"use a name like '{suggestion}' (export --name NAME overrides it)",
        )
    return name


@dataclass(frozen=True)
class PoolSpec:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    after_sign: bool = False  # max-pool the ±1 outputs (an OR) instead of the accumulators


@dataclass(frozen=True)
class LayerSpec:
    """One block, normalised, with its shapes (C, H, W)."""

    index: int
    type: str
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    pool: PoolSpec | None
    in_shape: tuple[int, int, int]
    conv_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    # hidden blocks: batch norm + sign given as integer thresholds (imported models; not trainable)
    threshold: bool = False

    @property
    def fan_in(self) -> int:
        return self.in_shape[0] * self.kernel[0] * self.kernel[1]

    @property
    def is_linear(self) -> bool:
        return self.type in ("blinear", "exit")

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the conv/linear part (every conv output once)."""
        c, h, w = self.conv_shape
        return c * h * w * self.fan_in


class BlockStack:
    """Hidden blocks then one exit (``layers``): a device section (:class:`ModelSpec`) or a DDNN
    edge/cloud section (:class:`ebnn_codegen.ddnn.config.SectionSpec`)."""

    layers: tuple[LayerSpec, ...]

    @property
    def hidden(self) -> tuple[LayerSpec, ...]:
        return self.layers[:-1]

    @property
    def exit(self) -> LayerSpec:
        return self.layers[-1]

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_channels


@dataclass(frozen=True)
class ModelSpec(BlockStack):
    name: str
    input_shape: tuple[int, int, int]
    layers: tuple[LayerSpec, ...]
    config: dict[str, Any] = field(compare=False, repr=False)


def check_int(value: Any, where: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an integer in [minimum, maximum], or a :class:`ConfigError` naming ``where``
    (the one integer check of the device and DDNN config parsers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{where} = {value} is larger than the supported maximum {maximum}")
    return value


def _pair(value: Any, where: str, minimum: int, maximum: int | None = None) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{where} must be an integer or a list of 2 integers, got {value!r}")
        return (
            check_int(value[0], f"{where}[0]", minimum, maximum),
            check_int(value[1], f"{where}[1]", minimum, maximum),
        )
    v = check_int(value, where, minimum, maximum)
    return (v, v)


def _check_keys(entry: dict[Any, Any], allowed: set[str], where: str) -> None:
    # keys from a checkpoint need not be strings: name those first
    unknown = sorted(set(entry) - allowed, key=lambda k: (isinstance(k, str), repr(k)))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _parse_pool(entry: Any, where: str) -> PoolSpec | None:
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be null or an object with kernel/stride/padding, got {entry!r}")
    _check_keys(entry, {"kernel", "stride", "padding", "after_sign"}, where)
    if "kernel" not in entry:
        raise ConfigError(f"{where}: missing field 'kernel'")
    k = _pair(entry["kernel"], f"{where}.kernel", 1, MAX_KERNEL)
    s = _pair(entry.get("stride", k), f"{where}.stride", 1, MAX_KERNEL)
    p = _pair(entry.get("padding", 0), f"{where}.padding", 0, MAX_KERNEL)
    for axis in range(2):
        if 2 * p[axis] > k[axis]:
            raise ConfigError(
                f"{where}.padding {list(p)} must be at most half the pool kernel {list(k)} "
                "(a window of padding only has no maximum)"
            )
    after = entry.get("after_sign", False)
    if not isinstance(after, bool):
        raise ConfigError(f"{where}.after_sign must be true or false, got {after!r}")
    return PoolSpec(k, s, p, after)


def parse_config(config: Any) -> ModelSpec:
    """Validate ``config`` and return the normalised :class:`ModelSpec`."""
    if not isinstance(config, dict):
        raise ConfigError(f"config must be an object, got {type(config).__name__}")
    _check_keys(config, {"name", "input", "layers", "meta"}, "config")
    for key in ("name", "input", "layers"):
        if key not in config:
            raise ConfigError(f"config: missing field '{key}'")
    name = check_identifier(config["name"], "config.name")
    shape = config["input"]
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise ConfigError(f"config.input must be [C, H, W], got {shape!r}")
    c = check_int(shape[0], "config.input[0] (channels)", 1, MAX_INPUT_CHANNELS)
    h = check_int(shape[1], "config.input[1] (height)", 1, MAX_SPATIAL)
    w = check_int(shape[2], "config.input[2] (width)", 1, MAX_SPATIAL)
    layers_in = config["layers"]
    if not isinstance(layers_in, list) or not layers_in:
        raise ConfigError("config.layers must be a non-empty list")

    layers: list[LayerSpec] = []
    cur = (c, h, w)
    total_macs = total_weights = total_evals = 0
    for i, entry in enumerate(layers_in):
        where = f"layers[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be an object, got {entry!r}")
        kind = entry.get("type")
        if "type" not in entry:
            raise ConfigError(f"{where}: missing field 'type' (one of: {', '.join(LAYER_TYPES)})")
        if kind not in LAYER_TYPES:
            raise ConfigError(f"{where}.type: unknown layer type {kind!r} (supported: {', '.join(LAYER_TYPES)})")
        if i == 0 and kind != "conv":
            raise ConfigError(f"{where}: the first block must be 'conv' (uint8 input), got '{kind}'")
        if i > 0 and kind == "conv":
            raise ConfigError(f"{where}: 'conv' takes uint8 pixels and must be the first block; use 'bconv'")
        if kind == "bconv" and layers[-1].type == "blinear":
            raise ConfigError(f"{where}: 'bconv' cannot follow 'blinear' (no spatial input left)")
        if kind == "exit" and i != len(layers_in) - 1:
            raise ConfigError(
                f"{where}: 'exit' must be the last block, but {len(layers_in) - 1 - i} block(s) follow it"
            )
        if i == len(layers_in) - 1 and kind != "exit":
            raise ConfigError(f"{where}: the last block must be 'exit', got '{kind}'")

        if kind in ("conv", "bconv"):
            _check_keys(entry, {"type", "out_channels", "kernel", "stride", "padding", "pool", "threshold"}, where)
            for key in ("out_channels", "kernel"):
                if key not in entry:
                    raise ConfigError(f"{where}: missing field '{key}'")
            f = check_int(entry["out_channels"], f"{where}.out_channels", 1, MAX_CHANNELS)
            k = _pair(entry["kernel"], f"{where}.kernel", 1, MAX_KERNEL)
            s = _pair(entry.get("stride", 1), f"{where}.stride", 1, MAX_KERNEL)
            p = _pair(entry.get("padding", 0), f"{where}.padding", 0, MAX_KERNEL)
            for axis, dim in ((0, "height"), (1, "width")):
                if p[axis] >= k[axis]:
                    raise ConfigError(f"{where}.padding {list(p)} must be smaller than the kernel {list(k)}")
                if k[axis] > cur[1 + axis] + 2 * p[axis]:
                    raise ConfigError(
                        f"{where}.kernel {list(k)} is larger than its padded input "
                        f"({dim} {cur[1 + axis]} + 2*{p[axis]})"
                    )
            pool = _parse_pool(entry.get("pool"), f"{where}.pool")
            conv_shape = (f, _out_size(cur[1], k[0], s[0], p[0]), _out_size(cur[2], k[1], s[1], p[1]))
            out_shape = conv_shape
            if pool is not None:
                oh = _out_size(conv_shape[1], pool.kernel[0], pool.stride[0], pool.padding[0])
                ow = _out_size(conv_shape[2], pool.kernel[1], pool.stride[1], pool.padding[1])
                if oh < 1 or ow < 1:
                    raise ConfigError(
                        f"{where}.pool {list(pool.kernel)} leaves no output on a "
                        f"{conv_shape[1]}x{conv_shape[2]} feature map"
                    )
                out_shape = (f, oh, ow)
        else:
            key = "out_features" if kind == "blinear" else "classes"
            _check_keys(entry, {"type", key} | ({"threshold"} if kind == "blinear" else set()), where)
            if key not in entry:
                raise ConfigError(f"{where}: missing field '{key}'")
            f = check_int(
                entry[key],
                f"{where}.{key}",
                2 if kind == "exit" else 1,
                MAX_CLASSES if kind == "exit" else MAX_CHANNELS,
            )
            # A linear block is a convolution whose kernel covers its whole input.
            if max(cur[1], cur[2]) > MAX_LINEAR_INPUT_SIDE:
                raise ConfigError(
                    f"{where}: its input is {cur[1]}x{cur[2]}; a linear block takes at most "
                    f"{MAX_LINEAR_INPUT_SIDE} rows and columns (the C block table holds kernel sizes in a byte)",
                    hint="pool or stride the blocks before it",
                )
            k, s, p, pool = (cur[1], cur[2]), (1, 1), (0, 0), None
            conv_shape = out_shape = (f, 1, 1)
        threshold = entry.get("threshold", False)
        if not isinstance(threshold, bool):
            raise ConfigError(f"{where}.threshold must be true or false, got {threshold!r}")
        spec = LayerSpec(i, kind, f, k, s, p, pool, cur, conv_shape, out_shape, threshold)
        if kind == "conv":
            if 255 * spec.fan_in > MAX_FIRST_RANGE:
                raise ConfigError(
                    f"{where}: first block fan-in {spec.fan_in} (C*kh*kw) is too large "
                    f"(255*fan-in must be <= {MAX_FIRST_RANGE})"
                )
        elif spec.fan_in > MAX_FAN_IN:
            raise ConfigError(f"{where}: binary fan-in {spec.fan_in} (C*kh*kw) exceeds the maximum {MAX_FAN_IN}")
        total_macs += spec.macs
        if total_macs > MAX_MACS:
            raise ConfigError(f"{where}: the network needs more than {MAX_MACS} MACs per input; refusing to lower it")
        total_weights += spec.out_channels * spec.fan_in
        if total_weights > MAX_WEIGHTS:
            raise ConfigError(
                f"{where}: the network has more than {MAX_WEIGHTS} weights "
                f"({total_weights} up to this block); refusing to build it"
            )
        if kind != "exit":
            total_evals += spec.out_channels * (2 * spec.fan_in * (255 if kind == "conv" else 1) + 1)
            if total_evals > MAX_LOWERING_EVALS:
                raise ConfigError(
                    f"{where}: lowering would evaluate batch norm {total_evals} times "
                    f"(out_channels * accumulator range; the maximum is {MAX_LOWERING_EVALS}); refusing to lower it"
                )
        layers.append(spec)
        cur = out_shape
    return ModelSpec(name, (c, h, w), tuple(layers), dict(config))
