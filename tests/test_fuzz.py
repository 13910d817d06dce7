"""Fuzzing in the test suite: a short, bounded libFuzzer run and two Python fuzz tests.

* ``fuzz_infer`` (``fuzz/``): the generated inference function of a small
  model under ASan + UBSan, with the invariants listed in
  ``fuzz/fuzz_infer.c``, and ``fuzz_messages``: the DDNN message codec and
  gateway C; each for a few seconds (``EBNN_FUZZ_SECONDS``) from its seeds in
  ``fuzz/corpus/``.  The longer run is documented in docs/hardening.md
  (``python fuzz/build.py --run 300 --merge``).
* The config parser on random config-shaped data, and the CLI on mutated
  checkpoints: a clean ``error:`` line (exit 2) or success, never a traceback.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from conftest import require_tools, strict_tools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebnn_codegen.cli import main
from ebnn_codegen.config import ModelSpec, parse_config
from ebnn_codegen.errors import ConfigError, ToolError

ROOT = Path(__file__).resolve().parents[1]
FUZZ_SECONDS = int(os.environ.get("EBNN_FUZZ_SECONDS", "15"))
BASE_MODEL = ROOT / "tests" / "invalid" / "base_model.pt"


def _fuzz_build():
    spec = importlib.util.spec_from_file_location("ebnn_fuzz_build", ROOT / "fuzz" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_or_skip(builder, out: Path) -> Path:
    require_tools("clang", package="clang")
    try:
        return builder(out=out)
    except ToolError as exc:
        if "libclang_rt" in str(exc) or "cannot find" in str(exc):
            msg = "clang has no libFuzzer/sanitizer runtime: install the Debian package libclang-rt-14-dev"
            if strict_tools():
                pytest.fail(msg + " (CI=true: tests needing tools must not skip)")
            pytest.skip(msg)
        raise


@pytest.mark.fuzz
@pytest.mark.parametrize(("harness", "seconds"), [("infer", FUZZ_SECONDS), ("messages", max(1, FUZZ_SECONDS // 3))])
def test_libfuzzer_harness(harness: str, seconds: int, tmp_path: Path) -> None:
    fb = _fuzz_build()
    exe = _build_or_skip(fb.build if harness == "infer" else fb.build_messages, tmp_path / "build")
    scratch = tmp_path / "new_inputs"
    scratch.mkdir()
    rc, execs, output = fb.run(
        exe,
        f"-max_total_time={seconds}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={tmp_path}/",
        corpora=[scratch, ROOT / "fuzz" / "corpus" / harness],
        timeout=seconds + 120,
    )
    tail = "\n".join(output.strip().splitlines()[-40:])
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-")))
    assert rc == 0, f"fuzz_{harness} found a problem (exit {rc}, inputs {crashes} in {tmp_path})\n{tail}"
    assert "runtime error" not in output and "ERROR:" not in output, tail
    assert execs >= 100, tail
    print(f"fuzz_{harness}: {execs} executions in {seconds} s, no sanitizer report, invariants held")


# ---------------------------------------------------------------------------
# Python fuzz tests


_SCALARS = st.one_of(
    st.integers(min_value=-3, max_value=40),
    st.sampled_from([0, 1, 2, 3, 10**9, -(10**9), 2**31, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.sampled_from(["conv", "bconv", "blinear", "exit", "net", "int", "_x", "a*/b"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_KEYS = st.one_of(
    st.sampled_from(["name", "input", "layers", "meta", "type", "out_channels", "out_features", "classes", "kernel"]),
    st.sampled_from(["stride", "padding", "pool", "colour"]),
    st.integers(0, 2),
)
_VALID = {
    "name": "net",
    "input": [2, 11, 9],
    "layers": [
        {
            "type": "conv",
            "out_channels": 6,
            "kernel": [3, 2],
            "padding": 1,
            "pool": {"kernel": 3, "stride": 2, "padding": 1},
        },
        {"type": "bconv", "out_channels": 9, "kernel": 3, "stride": [2, 1], "padding": [1, 0]},
        {"type": "blinear", "out_features": 7},
        {"type": "exit", "classes": 4},
    ],
}


@st.composite
def _configs(draw: st.DrawFn) -> dict:
    """A valid config with a few random edits: set, delete or add a field, drop or repeat a block."""
    config = copy.deepcopy(_VALID)
    for _ in range(draw(st.integers(1, 4))):
        layers = config.get("layers") if isinstance(config.get("layers"), list) else []
        where = draw(st.integers(-1, len(layers) - 1)) if layers else -1
        target = config if where < 0 or not isinstance(layers[where], dict) else layers[where]
        op = draw(st.sampled_from(["set", "set", "delete", "drop_block", "repeat_block", "set_pool"]))
        if op == "set":
            target[draw(_KEYS)] = draw(_VALUES)
        elif op == "delete" and target:
            del target[draw(st.sampled_from(sorted(target, key=repr)))]
        elif op == "drop_block" and layers:
            del layers[where]
        elif op == "repeat_block" and layers:
            layers.insert(where, copy.deepcopy(layers[where]))
        elif op == "set_pool" and target is not config:
            target["pool"] = draw(
                st.dictionaries(st.sampled_from(["kernel", "stride", "padding", "size"]), _SCALARS, max_size=3)
            )
    return config


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_configs())
def test_parse_config_never_crashes(config: dict) -> None:
    try:
        spec = parse_config(config)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(spec, ModelSpec)
    assert all(min(layer.out_shape) >= 1 for layer in spec.layers)


def _mutations() -> st.SearchStrategy:
    size = BASE_MODEL.stat().st_size
    flip = st.tuples(st.just("flip"), st.integers(0, size - 1), st.integers(1, 255))
    cut = st.tuples(st.just("cut"), st.integers(0, size - 1), st.just(0))
    return st.lists(st.one_of(flip, flip, cut), min_size=1, max_size=3)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(_mutations())
def test_mutated_checkpoints_fail_cleanly(tmp_path_factory: pytest.TempPathFactory, mutations: list) -> None:
    data = bytearray(BASE_MODEL.read_bytes())
    for op, at, value in mutations:
        if op == "flip" and at < len(data):
            data[at] ^= value
        elif op == "cut":
            del data[at:]
    tmp = tmp_path_factory.mktemp("mutant")
    model = tmp / "model.pt"
    model.write_bytes(bytes(data))
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        rc = main(["-q", "export", str(model), "-o", str(tmp / "out")])
    lines = err.getvalue().splitlines()
    assert rc in (0, 2), err.getvalue()
    if rc == 2:
        assert lines and lines[0].startswith("error: ") and len(lines) <= 2, err.getvalue()
        assert not (tmp / "out").exists()
    else:
        assert lines == [] and (tmp / "out").is_dir()


# ---------------------------------------------------------------------------
# DDNN messages: random and near-valid bytes -> a valid message or MessageError, never anything else


@st.composite
def _layouts(draw: st.DrawFn):
    from ebnn_codegen.ddnn.messages import MessageLayout

    senders = draw(st.integers(1, 6))
    shapes = tuple(draw(st.tuples(st.integers(1, 9), st.integers(1, 4), st.integers(1, 4))) for _ in range(senders))
    return MessageLayout(
        num_classes=draw(st.integers(2, 12)),
        score_bits=draw(st.sampled_from([8, 16])),
        score_frac_bits=draw(st.integers(0, 6)),
        num_score_senders=draw(st.integers(0, senders)),
        feature_shapes=shapes,
    )


@st.composite
def _near_valid(draw: st.DrawFn, layout) -> bytes:
    """A valid message of ``layout``, then up to three edits (bit flips, cuts, extra bytes, a new header)."""
    import numpy as np

    from ebnn_codegen.ddnn import messages as M

    seq = draw(st.integers(0, 0xFFFF))
    if layout.num_score_senders and draw(st.booleans()):
        q = draw(
            st.lists(st.integers(-layout.qmax, layout.qmax), min_size=layout.num_classes, max_size=layout.num_classes)
        )
        data = bytearray(M.encode_scores(layout, draw(st.integers(0, layout.num_score_senders - 1)), seq, np.array(q)))
    else:
        sender = draw(st.integers(0, len(layout.feature_shapes) - 1))
        shape = layout.feature_shapes[sender]
        flat = draw(st.lists(st.sampled_from([-1, 1]), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        data = bytearray(M.encode_features(layout, sender, seq, np.array(flat, np.int8).reshape(shape)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "cut", "extend", "header"]))
        if op == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=3))
        elif op == "header" and data:
            data[0] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_message_decoder_accepts_only_valid_messages(data: st.DataObject) -> None:
    from ebnn_codegen.ddnn import messages as M

    layout = data.draw(_layouts())
    raw = data.draw(st.one_of(st.binary(max_size=40), _near_valid(layout)))
    try:
        msg = M.decode_message(raw, layout)
    except M.MessageError as exc:
        assert exc.reason in M.REASONS
        return
    # accepted: the fields are in range and encode back to exactly the same bytes
    assert msg.seq == raw[1] | (raw[2] << 8)
    if msg.kind == M.SCORES:
        assert 0 <= msg.sender < layout.num_score_senders
        assert msg.values.shape == (layout.num_classes,) and abs(msg.values).max() <= layout.qmax
        assert M.encode_scores(layout, msg.sender, msg.seq, msg.values) == raw
    else:
        assert msg.kind == M.FEATURES and 0 <= msg.sender < len(layout.feature_shapes)
        assert msg.values.shape == layout.feature_shapes[msg.sender] and set(msg.values.flat) <= {-1, 1}
        assert M.encode_features(layout, msg.sender, msg.seq, msg.values) == raw


# ---------------------------------------------------------------------------
# DDNN staged runtime over a hostile radio link: counted errors, never a crash

_RADIO = {
    "name": "radio",
    "devices": 6,
    "classes": 10,
    "messages": {"score_bits": 8, "score_frac_bits": 3},
    "device": {
        "input": [1, 3, 4],
        "layers": [{"type": "conv", "out_channels": 5, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 10}],
    },
    "local": {"aggregator": "concat"},
    "cloud": {
        "aggregator": "concat",
        "layers": [{"type": "bconv", "out_channels": 8, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 10}],
    },
}


@pytest.fixture(scope="module")
def radio():
    import torch

    from ebnn_codegen.ddnn import datasets
    from ebnn_codegen.ddnn.model import DDNN
    from ebnn_codegen.ddnn.runtime import StagedRuntime

    torch.manual_seed(0)
    runtime = StagedRuntime(DDNN(_RADIO).eval(), devices="torch")
    return runtime, runtime.device_stage(datasets.load("digits-tiles", "test", n=40))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from([0.02, 0.2, 1.0]),
    threshold=st.sampled_from([0.0, 0.3, 0.9, 1.01]),
)
def test_staged_runtime_survives_a_hostile_channel(radio, seed: int, rate: float, threshold: float) -> None:
    """Each message may be dropped, cut, extended, bit-flipped, replaced, or re-addressed in flight."""
    import numpy as np

    from ebnn_codegen.ddnn.messages import REASONS

    runtime, stage = radio
    rng = np.random.default_rng(seed)
    corrupted = 0

    def channel(data: bytes) -> bytes | None:
        nonlocal corrupted
        if rng.random() >= rate:
            return data
        op = int(rng.integers(0, 7))
        if op == 0:
            return None  # lost
        corrupted += 1
        b = bytearray(data)
        if op == 1:
            del b[int(rng.integers(0, len(b))) :]
        elif op == 2:
            b += bytes(rng.integers(0, 256, int(rng.integers(1, 4)), dtype=np.uint8))
        elif op == 3:
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        elif op == 4:
            b = bytearray(rng.integers(0, 256, int(rng.integers(0, 2 * len(b))), dtype=np.uint8))
        elif op == 5:
            b[0] = int(rng.integers(0, 256))  # another type and sender
        else:
            b[1], b[2] = int(rng.integers(0, 256)), int(rng.integers(0, 256))  # another sample
        return bytes(b)

    out = runtime.run(stage, {"local": threshold}, channel=channel)
    k = runtime.model.num_classes
    assert out.pred.shape == (len(stage),) and ((out.pred >= 0) & (out.pred < k)).all()
    assert set(out.message_errors) <= set(REASONS) | {"unexpected", "sequence", "duplicate"}
    # every counted error comes from a message damaged in flight (each one displaces at most one)
    assert sum(out.message_errors.values()) <= corrupted
