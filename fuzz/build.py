"""Render generated C and build the libFuzzer harnesses (clang, ASan + UBSan).

    python fuzz/build.py                          # both harnesses -> build/fuzz/{infer,messages}/
    python fuzz/build.py --harness infer --model m.pt   # fuzz_infer on any device checkpoint
    python fuzz/build.py --run 300                # build, then fuzz each harness for 5 minutes
    python fuzz/build.py --run 300 --merge        # ... and keep new interesting inputs in fuzz/corpus/

``fuzz_infer`` (``fuzz/fuzz_infer.c``): the generated inference function.  The
model is rendered twice, ``NAME`` with the fast kernels and ``NAME_ref`` with
the reference kernels, so the harness compares them bit for bit.  The default
model is small (2×9×7 input, 126 bytes), with odd sizes, strides, pooling with
padding, channel counts that are not multiples of 8, and extreme batch-norm
statistics (γ = 0, γ < 0, tiny variances, thresholds outside the accumulator range).

``fuzz_messages`` (``fuzz/fuzz_messages.c``): the DDNN message codec and the
gateway's local exit of two small DDNNs (int8 and int16 scores).

Needs ``clang`` and its sanitizer/libFuzzer runtimes (Debian: ``clang
libclang-rt-14-dev``).  Seeds are in ``fuzz/corpus/<harness>/``; new inputs
found by ``--run`` go to a scratch corpus in the build directory, and
``--merge`` adds only those that reach new coverage to the seeds.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SEEDS = HERE / "corpus" / "infer"
MESSAGE_SEEDS = HERE / "corpus" / "messages"
DEFAULT_OUT = ROOT / "build" / "fuzz"
FLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
"""On top of ebnn_codegen.cflags.STRICT_CFLAGS (added by the toolchain's compile_c)."""

FUZZ_CONFIG = {
    "name": "fuzznet",
    "input": [2, 9, 7],
    "layers": [
        {
            "type": "conv",
            "out_channels": 5,
            "kernel": [3, 2],
            "stride": [1, 2],
            "padding": [1, 1],
            "pool": {"kernel": 3, "stride": 2, "padding": 1},
        },
        {"type": "bconv", "out_channels": 11, "kernel": 3, "padding": 1, "pool": {"kernel": 2, "stride": 1}},
        {"type": "blinear", "out_features": 13},
        {"type": "exit", "classes": 5},
    ],
}


def fuzz_model(seed: int = 7):
    """The built-in fuzz model: fixed weights and batch-norm statistics, with extremes."""
    import torch

    import ebnn_codegen as E

    model = E.build(FUZZ_CONFIG)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for block in [*model.blocks, model.exit]:
            spec = block.spec
            layer = block.conv if hasattr(block, "conv") else block.linear
            layer.weight.copy_(torch.from_numpy(rng.uniform(-1, 1, tuple(layer.weight.shape)).astype(np.float32)))
            n = spec.out_channels
            fan = spec.fan_in
            scale = (fan * 127.0) ** 0.5 * 8 if spec.type == "conv" else fan**0.5
            gamma = rng.normal(0, 1, n)
            gamma[0] = 0.0  # constant output
            gamma[1 % n] = -abs(gamma[1 % n]) - 0.1  # flipped comparison
            mean = rng.normal(0, 1, n) * scale
            mean[2 % n] = 10.0 * fan * (255 if spec.type == "conv" else 1)  # threshold beyond the range
            var = rng.uniform(0, 1, n) * scale * scale + 1e-3
            var[3 % n] = 1e-9  # tiny variance: a huge slope
            bn = block.bn
            bn.weight.copy_(torch.from_numpy(gamma.astype(np.float32)))
            bn.bias.copy_(torch.from_numpy((rng.normal(0, 2, n)).astype(np.float32)))
            bn.running_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            bn.running_var.copy_(torch.from_numpy(var.astype(np.float32)))
    return model.eval()


def model_header(name: str, hidden_blocks: int) -> str:
    """``fuzz_model.h``: the harness's FZ_* names for model ``name``."""
    up = name.upper()
    sizes = ", ".join(f"{up}_BLOCK{i}_BYTES" for i in range(hidden_blocks))
    return f"""/* fuzz_model.h: written by fuzz/build.py for the model '{name}'. */
#ifndef FUZZ_MODEL_H
#define FUZZ_MODEL_H
#include "ebnn_runtime.h"
#include "{name}.h"
#include "{name}_ref.h"
#define FZ_INPUT_BYTES {up}_INPUT_BYTES
#define FZ_NUM_CLASSES {up}_NUM_CLASSES
#define FZ_NUM_HIDDEN {up}_NUM_HIDDEN
#define FZ_TRACE_BYTES {up}_TRACE_BYTES
#define FZ_WORKSPACE_BYTES {up}_WORKSPACE_BYTES
#define fz_run {name}_run
#define fz_ref_run {name}_ref_run
#define fz_infer {name}_infer
#define fz_features {name}_features
static const int fz_block_bytes[FZ_NUM_HIDDEN] = {{ {sizes} }};
#endif
"""


def render(model=None) -> tuple[dict[str, str], int]:
    """The C files for the harness: fast and reference renderings plus fuzz_model.h; and the input size."""
    import ebnn_codegen as E
    from ebnn_codegen import codegen

    graph = E.compile(fuzz_model() if model is None else model)
    if graph.name.lower() == "fz":
        graph.name = "fz_model"  # the harness's own FZ_* names
    files = codegen.render_model(graph, "fast")
    ref = copy.deepcopy(graph)
    ref.name = f"{graph.name}_ref"
    files.update(codegen.render_model(ref, "reference"))
    files["fuzz_model.h"] = model_header(graph.name, len(graph.hidden))
    files["fuzz_infer.c"] = (HERE / "fuzz_infer.c").read_text()
    return files, graph.input_bytes


DDNN_DEVICE = {"input": [1, 3, 4], "layers": [{"type": "conv", "out_channels": 5, "kernel": 3, "padding": 1}]}
DDNN_CONFIGS = {
    # int8 scores, CC aggregator, 5x3x4 = 60 feature bits (4 padding bits)
    "fzd8": {"devices": 3, "classes": 5, "aggregator": "concat", "score_bits": 8, "channels": 5},
    # int16 scores, MP aggregator, 8x3x4 = 96 feature bits (no padding)
    "fzd16": {"devices": 4, "classes": 3, "aggregator": "max", "score_bits": 16, "channels": 8},
}


def render_messages() -> dict[str, str]:
    """The message codec and gateway C of the two built-in DDNNs (fixed seeds)."""
    import torch

    from ebnn_codegen.ddnn import export
    from ebnn_codegen.ddnn.model import DDNN

    files: dict[str, str] = {}
    for name, c in DDNN_CONFIGS.items():
        k = c["classes"]
        config = {
            "name": name,
            "devices": c["devices"],
            "classes": k,
            "messages": {"score_bits": c["score_bits"], "score_frac_bits": 4},
            "device": {
                "input": DDNN_DEVICE["input"],
                "layers": [dict(DDNN_DEVICE["layers"][0], out_channels=c["channels"]), {"type": "exit", "classes": k}],
            },
            "local": {"aggregator": c["aggregator"]},
            "cloud": {
                "aggregator": "concat",
                "layers": [{"type": "blinear", "out_features": 8}, {"type": "exit", "classes": k}],
            },
        }
        torch.manual_seed(0)
        model = DDNN(config).eval()
        files.update(export.render_messages_and_gateway(model, export.compile_devices(model)))
    for harness in ("fuzz_messages.c", "fuzz_messages_body.h"):
        files[harness] = (HERE / harness).read_text()
    return files


def _compile(files: dict[str, str], out: Path, exe_name: str, cc: str, libs: tuple[str, ...] = ()) -> Path:
    from ebnn_codegen.targets.toolchain import compile_c

    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    sources = [out / n for n in files if n.endswith(".c")]
    return compile_c(cc, FLAGS, sources, out / exe_name, [out], libs, "the fuzzer")


def build(model=None, out: Path = DEFAULT_OUT, cc: str = "clang") -> Path:
    """Write the sources into ``out/infer`` and compile ``fuzz_infer``; returns the binary's path."""
    files, _ = render(model)
    return _compile(files, out / "infer", "fuzz_infer", cc)


def build_messages(out: Path = DEFAULT_OUT, cc: str = "clang") -> Path:
    """Write the sources into ``out/messages`` and compile ``fuzz_messages``; returns the binary's path."""
    return _compile(render_messages(), out / "messages", "fuzz_messages", cc, ("-lm",))


def run(exe: Path, *args: str, corpora: list[Path] | None = None, timeout: float | None = None) -> tuple[int, int, str]:
    """Run the fuzzer; returns (exit code, executions done, output).

    ``-rss_limit_mb=N`` is raised by this process's peak RSS: Linux carries
    the resident set of the parent at ``fork`` into the child's peak RSS,
    across ``exec``, and libFuzzer reads that peak, so a fuzzer started from a
    large process (a test session that has evaluated a big model) would report
    an out-of-memory on its first input.  The limit stays N megabytes above
    what the fuzzer inherits.
    """
    import resource

    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # Linux: kilobytes
    fixed = []
    for a in args:
        m = re.fullmatch(r"-rss_limit_mb=(\d+)", a)
        fixed.append(f"-rss_limit_mb={int(m.group(1)) + inherited_mb}" if m and int(m.group(1)) > 0 else a)
    cmd = [str(exe), *fixed, *[str(c) for c in corpora or []]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    done = re.findall(r"Done (\d+) runs", output) or re.findall(r"stat::number_of_executed_units:\s*(\d+)", output)
    return proc.returncode, int(done[-1]) if done else 0, output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", choices=("infer", "messages", "all"), default="all")
    parser.add_argument("--model", help="fuzz_infer: a device checkpoint (default: the built-in fuzz model)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"build directory (default: {DEFAULT_OUT})")
    parser.add_argument("--cc", default="clang")
    parser.add_argument("--run", type=int, metavar="SECONDS", help="fuzz each harness this long after building")
    parser.add_argument("--merge", action="store_true", help="with --run: add new interesting inputs to the seeds")
    args = parser.parse_args(argv)
    import ebnn_codegen as E

    out = Path(args.out)
    harnesses = []
    if args.harness in ("infer", "all"):
        harnesses.append(("infer", build(E.load(args.model) if args.model else None, out, args.cc)))
    if args.harness in ("messages", "all"):
        harnesses.append(("messages", build_messages(out, args.cc)))
    for _, exe in harnesses:
        print(exe)
    if args.run is None:
        return 0
    status = 0
    for name, exe in harnesses:
        seeds = HERE / "corpus" / name
        scratch = out / name / "corpus"
        scratch.mkdir(exist_ok=True)
        rc, execs, output = run(
            exe, f"-max_total_time={args.run}", "-print_final_stats=1", "-timeout=10", corpora=[scratch, seeds]
        )
        print("\n".join(output.strip().splitlines()[-12:]))
        print(f"fuzz_{name}: exit {rc}, {execs} executions in {args.run} s")
        status = status or rc
        if rc == 0 and args.merge:
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copytree(seeds, Path(tmp) / "seeds")
                mrc, _, mout = run(exe, "-merge=1", corpora=[seeds, Path(tmp) / "seeds", scratch])
                print("\n".join(mout.strip().splitlines()[-2:]))
                status = status or mrc
            print(f"seed corpus: {len(list(seeds.iterdir()))} files in {seeds}")
    return status


if __name__ == "__main__":
    sys.exit(main())
