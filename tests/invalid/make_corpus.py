"""Generate the bad-input corpus of ``tests/invalid/`` (deterministic: same bytes on every run).

    python tests/invalid/make_corpus.py            # (re)write the corpus
    python tests/invalid/make_corpus.py --check    # regenerate into a temp dir, compare with the committed files

Each ``invalid_<defect>.<ext>`` holds one defect; ``tests/test_invalid.py``
feeds every one of them to the CLI, by extension:

* ``.pt``   -- ``ebnn-gen export FILE -o OUT`` (plus the options given for FILE in ``args.json``);
* ``.npy``  -- ``ebnn-gen run base_model.pt --input FILE --output OUT.npz``;
* ``.name`` -- ``ebnn-gen export base_model.pt --name "$(cat FILE)" -o OUT``.

Sources: ``configs/<defect>.json`` are hand-written configs, each saved as a
checkpoint ``invalid_<defect>.pt`` (with an empty state_dict: the config is
refused first).  Every other defect is built below from ``base_model.pt``, a
small valid model with fixed weights.  The expected error text of each file is
in ``expected.json``.

Two files carry a pickle payload that, if it were ever unpickled, would create
the file ``EBNN_PAYLOAD_RAN`` in the current directory (and nothing else); the
test checks that it never appears.
"""

from __future__ import annotations

import argparse
import filecmp
import io
import json
import os
import pickle
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
FORMAT, VERSION = "ebnn-codegen", 1
MARKER = "EBNN_PAYLOAD_RAN"

BASE_CONFIG = {
    "name": "base",
    "input": [1, 8, 8],
    "layers": [
        {"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1, "pool": {"kernel": 2, "stride": 2}},
        {"type": "bconv", "out_channels": 8, "kernel": 3, "padding": 1},
        {"type": "blinear", "out_features": 16},
        {"type": "exit", "classes": 3},
    ],
}


class Payload:
    """Unpickling this runs ``exec`` (which only creates the marker file)."""

    def __reduce__(self):
        return (exec, (f"open({MARKER!r}, 'w').close()",))


def base_state(config: dict = BASE_CONFIG, seed: int = 20240601) -> dict[str, torch.Tensor]:
    """A state_dict for ``config`` (the base model's by default), every value drawn from a fixed numpy seed."""
    import ebnn_codegen as E

    model = E.build(config)
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in model.state_dict().items():
        shape = tuple(value.shape)
        if key.endswith("num_batches_tracked"):
            arr = np.zeros(shape, np.int64)
        elif key.endswith("running_var"):
            arr = rng.uniform(0.5, 4.0, shape)
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            arr = rng.normal(0.0, 2.0, shape)
        else:
            arr = rng.normal(0.0, 1.0, shape)
        state[key] = torch.from_numpy(np.array(arr, dtype=np.int64 if arr.dtype == np.int64 else np.float32))
    return state


def checkpoint(config, state, **extra) -> dict:
    return {"format": FORMAT, "version": VERSION, "kind": "device", "config": config, "state_dict": state, **extra}


def save_pt(obj, path: Path) -> None:
    torch.save(obj, path)  # deterministic for a given object and file name


def first_key(state, suffix: str, block: str = "blocks.0") -> str:
    return next(k for k in state if k.startswith(block) and k.endswith(suffix))


def with_value(state, key: str, index: int, value: float) -> dict:
    s = {k: v.clone() for k, v in state.items()}
    s[key].view(-1)[index] = value
    return s


def generate(out: Path) -> list[str]:
    """Write every corpus file into ``out``; return their names."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def put_pt(name: str, obj) -> None:
        save_pt(obj, out / name)
        written.append(name)

    def put_bytes(name: str, data: bytes) -> None:
        (out / name).write_bytes(data)
        written.append(name)

    state = base_state()
    put_pt("base_model.pt", checkpoint(BASE_CONFIG, state))
    good = (out / "base_model.pt").read_bytes()

    # --- files that are not (whole) checkpoints -------------------------------
    put_bytes("invalid_empty_checkpoint.pt", b"")
    put_bytes("invalid_truncated_checkpoint.pt", good[: len(good) // 2])
    put_bytes("invalid_not_a_checkpoint.pt", b"name,input,layers\nnet,1x8x8,conv\n")
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 2), np.float32))
    put_bytes("invalid_numpy_array_as_checkpoint.pt", buf.getvalue())
    corrupt = bytearray(good)
    pkl = corrupt.find(b"\x80\x02}q\x00(X")  # start of data.pkl: protocol 2, a dict
    assert pkl > 0, "data.pkl not found in the base checkpoint"
    corrupt[pkl + 2 : pkl + 10] = b"\xff" * 8
    put_bytes("invalid_corrupted_pickle.pt", bytes(corrupt))
    put_pt("invalid_bare_tensor.pt", torch.zeros(3))
    put_pt("invalid_state_dict_only.pt", state)
    put_pt("invalid_wrong_format_version.pt", {**checkpoint(BASE_CONFIG, state), "version": 99})
    put_pt("invalid_unknown_model_kind.pt", {**checkpoint(BASE_CONFIG, state), "kind": "transformer"})
    put_pt(
        "invalid_checkpoint_without_config.pt",
        {k: v for k, v in checkpoint(BASE_CONFIG, state).items() if k != "config"},
    )
    put_pt("invalid_state_dict_not_tensors.pt", checkpoint(BASE_CONFIG, {k: v.tolist() for k, v in state.items()}))
    put_pt("invalid_config_non_string_keys.pt", checkpoint({**BASE_CONFIG, 0: "zero", "colour": "red"}, state))

    # --- pickles that would run code if loaded without weights_only --------------
    put_pt("invalid_pickle_code_execution.pt", checkpoint(BASE_CONFIG, state, extra=Payload()))
    put_bytes(
        "invalid_pickle_code_execution_legacy.pt",
        pickle.dumps(checkpoint(BASE_CONFIG, {}, extra=Payload()), protocol=2),
    )

    # --- configs (hand-written sources in configs/) ------------------------------
    for src in sorted((HERE / "configs").glob("*.json")):
        config = json.loads(src.read_text())
        put_pt(f"invalid_{src.stem}.pt", checkpoint(config, {}))

    # --- state_dicts that do not match their config ------------------------------
    s = dict(state)
    del s[first_key(state, "bn.running_var", "blocks.1")]
    put_pt("invalid_state_dict_missing_key.pt", checkpoint(BASE_CONFIG, s))
    s = dict(state)
    s["blocks.1.conv.weight"] = torch.zeros(8, 4, 5, 5)
    put_pt("invalid_state_dict_wrong_shape.pt", checkpoint(BASE_CONFIG, s))
    s = dict(state)
    s["blocks.9.conv.weight"] = torch.zeros(1)
    put_pt("invalid_state_dict_unexpected_key.pt", checkpoint(BASE_CONFIG, s))
    s = dict(state)
    s["blocks.0.conv.weight"] = state["blocks.0.conv.weight"].to(torch.int32)
    put_pt("invalid_state_dict_wrong_dtype.pt", checkpoint(BASE_CONFIG, s))
    s = dict(state)
    s["blocks.0.conv.weight"] = state["blocks.0.conv.weight"].to(torch.complex64)
    put_pt("invalid_state_dict_complex_weights.pt", checkpoint(BASE_CONFIG, s))
    weight = state["blocks.1.conv.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested tensors are a prototype
        nested = torch.nested.as_nested_tensor([weight[0], weight[1]])
    for defect, tensor in {
        "sparse_tensor": weight.to_sparse(),
        "meta_tensor": torch.empty(weight.shape, device="meta"),
        "nested_tensor": nested,
    }.items():
        put_pt(f"invalid_state_dict_{defect}.pt", checkpoint(BASE_CONFIG, {**state, "blocks.1.conv.weight": tensor}))
    put_pt(
        "invalid_state_dict_from_another_config.pt",
        checkpoint(
            {**BASE_CONFIG, "layers": [dict(BASE_CONFIG["layers"][0], out_channels=6), *BASE_CONFIG["layers"][1:]]},
            state,
        ),
    )

    # --- a model too large for the target given with `export --target` (see args.json) ---
    big = {
        "name": "big",
        "input": [1, 32, 32],
        "layers": [{"type": "conv", "out_channels": 16, "kernel": 3, "padding": 1}, {"type": "exit", "classes": 10}],
    }
    put_pt("invalid_model_too_large_for_avr.pt", checkpoint(big, base_state(big, 5)))

    # --- non-finite numbers ------------------------------------------------------
    nan, inf = float("nan"), float("inf")
    cases = {
        "bn_nan_running_mean": ("blocks.0.bn.running_mean", 1, nan),
        "bn_infinite_running_var": ("blocks.1.bn.running_var", 2, inf),
        "bn_negative_running_var": ("blocks.1.bn.running_var", 0, -1.0),
        "bn_nan_gamma": ("blocks.2.bn.weight", 3, nan),
        "bn_infinite_beta": ("blocks.0.bn.bias", 0, -inf),
        "exit_bn_nan_running_mean": ("exit.bn.running_mean", 2, nan),
        "exit_bn_infinite_gamma": ("exit.bn.weight", 0, inf),
        "weights_nan": ("blocks.1.conv.weight", 5, nan),
        "weights_infinite": ("blocks.2.linear.weight", 7, -inf),
    }
    for defect, (key, index, value) in cases.items():
        assert key in state, key
        put_pt(f"invalid_{defect}.pt", checkpoint(BASE_CONFIG, with_value(state, key, index, value)))

    # --- inputs for `run` ----------------------------------------------------------
    def put_npy(name: str, arr: np.ndarray, allow_pickle: bool = False) -> None:
        b = io.BytesIO()
        np.save(b, arr, allow_pickle=allow_pickle)
        put_bytes(name, b.getvalue())

    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(2, 1, 8, 8), dtype=np.uint8)
    put_npy("invalid_input_float32.npy", img.astype(np.float32))
    put_npy("invalid_input_int64.npy", img.astype(np.int64))
    put_npy("invalid_input_int8.npy", img.astype(np.int8))
    put_npy("invalid_input_wrong_height_width.npy", rng.integers(0, 256, size=(2, 1, 8, 9), dtype=np.uint8))
    put_npy("invalid_input_wrong_channels.npy", rng.integers(0, 256, size=(2, 3, 8, 8), dtype=np.uint8))
    put_npy("invalid_input_missing_batch_dimension.npy", img[0])
    put_npy("invalid_input_scalar.npy", np.array(7, np.uint8))
    put_npy("invalid_input_pickled_objects.npy", np.array([Payload(), 1], dtype=object), allow_pickle=True)
    buf = io.BytesIO()
    np.save(buf, img)
    put_bytes("invalid_input_truncated.npy", buf.getvalue()[:-20])
    buf = io.BytesIO()
    np.savez(buf, x=img)
    put_bytes("invalid_input_npz_archive.npy", buf.getvalue())
    put_bytes("invalid_input_empty_file.npy", b"")
    put_bytes("invalid_input_not_npy.npy", b"0,1,2,3\n4,5,6,7\n")

    # --- names given with `export --name` ----------------------------------------
    for defect, name in {
        "option_name_comment_injection": "net */ int evil; /*",
        "option_name_newline_injection": "net\n#define EBNN_FLASH evil\n",
        "option_name_include_directive": '#include "/etc/passwd"',
        "option_name_c_keyword": "static_assert",
        "option_name_path_traversal": "../../tmp/net",
    }.items():
        put_bytes(f"invalid_{defect}.name", name.encode())
    return written


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        names = generate(Path(tmp))
        bad = [n for n in names if not (HERE / n).exists() or not filecmp.cmp(Path(tmp) / n, HERE / n, shallow=False)]
        stale = sorted(
            p.name
            for p in HERE.iterdir()
            if (p.name.startswith("invalid_") or p.name == "base_model.pt") and p.name not in names
        )
    for n in bad:
        print(f"differs from the generator: {n}", file=sys.stderr)
    for n in stale:
        print(f"not made by the generator: {n}", file=sys.stderr)
    return 1 if bad or stale else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the committed corpus with a fresh one")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        names = generate(Path(tmp))
        for p in HERE.iterdir():
            if p.is_file() and (p.name.startswith("invalid_") or p.name == "base_model.pt") and p.name not in names:
                p.unlink()
        for n in names:
            os.replace(Path(tmp) / n, HERE / n)
    print(f"{len(names) - 1} bad inputs and base_model.pt written to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
