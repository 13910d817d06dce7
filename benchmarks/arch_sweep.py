"""Strict-flags architecture sweep: random architectures through every C compiler, compile-only.

    python benchmarks/arch_sweep.py --count 2000            # thousands of architectures
    python benchmarks/arch_sweep.py --count 200 --seed 7 --jobs 2

Each architecture is a seeded random config aimed at the edges of the generated kernels
(docs/speed.md): 1-channel blocks, 1xk and kx1 kernels, stride 2 with pool stride 1, windows on
either side of every limit of the fast path (first-block windows up to 64 bytes and beyond,
binary windows up to 28 bytes (AVR asm), 29..31 (no asm) and beyond (runtime kernel), words
with a 1, 2 or 3-byte tail), blocks with and without interior positions, plus random batch-norm
statistics with channels forced constant +1 or -1 (γ = 0, β = ±0.5), sometimes a whole block.
Every model is rendered with both kernel strategies and compiled with
:data:`ebnn_codegen.cflags.STRICT_CFLAGS` (``-c``, the generated model and the runtime) by gcc,
clang and every installed cross compiler.  Models are renamed ``s<n>`` so many of them are
compiled by one compiler invocation (one process per compiler and batch, run in parallel).

Exit status: 0 every file compiled, 1 some failed (each failure printed with the config and
the compiler's first lines), 2 a compiler is missing (with ``--require-all``).  Limits: only
compiles (no link, no run: the parity tests run the models); the configs stay small (inputs up
to 20x20, at most 3 hidden blocks) so a run of 200 architectures takes well under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ebnn_codegen.cflags import STRICT_CFLAGS  # noqa: E402


@dataclass(frozen=True)
class Compiler:
    """One C compiler and the architecture flags of the target it builds for."""

    name: str
    cc: str
    flags: tuple[str, ...]

    def at(self, opt: str) -> Compiler:
        """The same compiler at optimisation level ``opt`` (e.g. ``-O0``: front-end warnings only,
        about 4x faster to compile than -O2; the flow-based ones need the real level)."""
        flags = tuple(opt if f.startswith("-O") else f for f in self.flags)
        return Compiler(f"{self.name}{opt}", self.cc, flags)


COMPILERS: tuple[Compiler, ...] = (
    Compiler("gcc", "gcc", ("-O2",)),
    Compiler("clang", "clang", ("-O2",)),
    Compiler("avr", "avr-gcc", ("-Os", "-mmcu=atmega328p")),
    Compiler("cortex-m0", "arm-none-eabi-gcc", ("-O2", "-mcpu=cortex-m0", "-mthumb")),
    Compiler(
        "cortex-m4", "arm-none-eabi-gcc", ("-O2", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
    ),
    Compiler("rv32imc", "riscv64-unknown-elf-gcc", ("-O2", "-march=rv32imc", "-mabi=ilp32", "--specs=picolibc.specs")),
    Compiler("xtensa", "xtensa-lx106-elf-gcc", ("-O2", "-mlongcalls")),
)

KERNELS = ("fast", "reference")


def _side(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 1, 2, 3, 3, 5, int(rng.integers(1, 6))]))


def _conv_entry(rng: np.random.Generator, kind: str, h: int, w: int, channels: list[int]) -> dict:
    shape = rng.random()
    if kind == "bconv" and shape < 0.2:  # binary windows of 29..31 bytes: no asm (with 9..16 or 33+ channels)
        kh, kw = [(3, 5), (5, 3), (1, 6), (6, 1)][int(rng.integers(0, 4))]
    elif shape < 0.3:  # 1 x k
        kh, kw = 1, int(rng.integers(1, min(6, w + 1) + 1))
    elif shape < 0.5:  # k x 1
        kh, kw = int(rng.integers(1, min(6, h + 1) + 1)), 1
    else:
        kh, kw = int(rng.integers(1, min(5, h + 1) + 1)), int(rng.integers(1, min(5, w + 1) + 1))
    entry: dict = {"type": kind, "out_channels": int(rng.choice(channels)), "kernel": [kh, kw]}
    if rng.random() < 0.4:
        entry["stride"] = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    if rng.random() < 0.5:
        entry["padding"] = [int(rng.integers(0, kh)), int(rng.integers(0, kw))]
    if rng.random() < 0.6:
        pk = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        pool_stride = [1, 1] if rng.random() < 0.3 else [int(rng.integers(1, 4)), int(rng.integers(1, 3))]
        entry["pool"] = {
            "kernel": pk,
            "stride": pool_stride,
            "padding": [int(rng.integers(0, pk[0] // 2 + 1)), int(rng.integers(0, pk[1] // 2 + 1))],
        }
    return entry


def random_arch(rng: np.random.Generator, name: str = "s", small: bool = False) -> dict:
    """A random valid config aimed at the kernels' edge cases (see the module docstring).

    ``small``: at most 9 channels a block (smaller unrolled kernels, about 4x faster to compile;
    every kernel branch is still reached), the profile of the test suite's sweep.
    """
    from ebnn_codegen.config import parse_config
    from ebnn_codegen.errors import ConfigError

    for _ in range(1000):
        c = int(rng.choice([1, 1, 2, 3, 4]))
        h, w = int(rng.integers(1, 18)), int(rng.integers(1, 18))
        # small channel counts keep binary windows around the 28 / 31 byte limits of the fast path
        hidden_channels = [1, 1, 2, 3, 5, 8, 9, 9] if small else [1, 1, 2, 3, 7, 8, 9, 16, 17, 24, 25, 33]
        layers = [_conv_entry(rng, "conv", h, w, [1, 1, 2, 5, 8, 9, 9] if small else [1, 1, 2, 5, 8, 9, 16])]
        for _ in range(int(rng.choice([0, 1, 1, 2]))):
            layers.append(_conv_entry(rng, "bconv", 5, 5, hidden_channels))
        for _ in range(int(rng.choice([0, 0, 1]))):
            layers.append(
                {"type": "blinear", "out_features": int(rng.choice([1, 3, 8, 9] if small else [1, 3, 8, 9, 33]))}
            )
        layers.append({"type": "exit", "classes": int(rng.integers(2, 6))})
        cfg = {"name": name, "input": [c, h, w], "layers": layers}
        try:
            parse_config(cfg)
        except ConfigError:
            continue
        return cfg
    raise RuntimeError("no valid random config found")


def random_bn_model(cfg: dict, seed: int):
    """The model of ``cfg`` with random weights and batch norm; some channels (sometimes a whole
    block) forced constant +1 or -1 (γ = 0, β = ±0.5)."""
    import torch

    rng = np.random.default_rng(seed + 1_000_003)
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import random_model

    model = random_model(cfg, seed=seed, extreme=bool(rng.random() < 0.3))
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) or rng.random() < 0.5:
                continue
            n = m.num_features
            whole = rng.random() < 0.35
            chosen = np.arange(n) if whole else np.flatnonzero(rng.random(n) < 0.3)
            sign = float(rng.choice([-1.0, 1.0]))
            for ch in chosen:
                m.weight[int(ch)] = 0.0
                m.bias[int(ch)] = 0.5 * (sign if whole else float(rng.choice([-1.0, 1.0])))
    return model


def render_one(index: int, seed: int, small: bool = False) -> tuple[dict, dict[str, dict[str, str]]]:
    """The config of sweep case ``index`` and its C per kernel strategy ({kernels: {file: text}})."""
    import ebnn_codegen as E
    from ebnn_codegen.codegen import render_model

    rng = np.random.default_rng([seed, index])
    cfg = random_arch(rng, name=f"s{index}", small=small)
    graph = E.compile(random_bn_model(cfg, seed * 100_003 + index))
    return cfg, {k: render_model(graph, k) for k in KERNELS}


def _compile(comp: Compiler, d: Path, sources: list[str]) -> subprocess.CompletedProcess:
    cmd = [comp.cc, *STRICT_CFLAGS, *comp.flags, "-c", "-I", str(d), *[str(d / s) for s in sources]]
    out = d / f"obj-{comp.name}"
    out.mkdir(exist_ok=True)
    return subprocess.run(cmd, cwd=out, capture_output=True, text=True)


def _compile_unit(comp: Compiler, d: Path, unit: str, members: list[str]) -> list[tuple[str, str]]:
    """Compile one merged unit; on failure, find the failing member files one by one."""
    proc = _compile(comp, d, [unit])
    if proc.returncode == 0:
        return []
    failures = []
    for s in members:
        p = _compile(comp, d, [s])
        if p.returncode != 0:
            failures.append((s, p.stderr.strip()))
    return failures or [(unit, proc.stderr.strip())]


def merged_unit(members: list[str]) -> str:
    """One translation unit including many models' C files (so one compiler process handles them);
    the few static helpers without a model prefix (swar_nib, swar_fold) are renamed per model."""
    out = []
    for src in members:
        stem = src[:-2]
        out += [f"#define swar_nib {stem}_swar_nib", f"#define swar_fold {stem}_swar_fold", f'#include "{src}"']
        out += ["#undef swar_nib", "#undef swar_fold"]
    return "\n".join(out) + "\n"


def available(compilers: Iterable[Compiler]) -> tuple[list[Compiler], list[Compiler]]:
    have = [c for c in compilers if shutil.which(c.cc)]
    return have, [c for c in compilers if not shutil.which(c.cc)]


def _write_models(
    d: Path, start: int, count: int, seed: int, small: bool
) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """Render the architectures into ``d``: {kernels: [model .c files]}, {file: config}."""
    sources: dict[str, list[str]] = {k: [] for k in KERNELS}
    configs: dict[str, dict] = {}
    for index in range(start, start + count):
        cfg, per_kernels = render_one(index, seed, small)
        for kernels, files in per_kernels.items():
            for fname, text in files.items():
                if fname.startswith("ebnn_runtime"):
                    if not (d / fname).exists():
                        (d / fname).write_text(text)
                    elif (d / fname).read_text() != text:
                        raise RuntimeError(f"{fname} differs between models")
                    continue
                target = fname if kernels == "fast" else fname.replace(".", "_ref.", 1)
                text = text.replace(f'#include "{cfg["name"]}.h"', f'#include "{target[:-2]}.h"')
                (d / target).write_text(text)
                if target.endswith(".c"):
                    sources[kernels].append(target)
                    configs[target] = cfg
    return sources, configs


def sweep(
    count: int,
    seed: int,
    compilers: list[Compiler],
    jobs: int,
    start: int = 0,
    per_unit: int = 25,
    small: bool = False,
) -> tuple[int, list[dict]]:
    """Render ``count`` architectures and compile them with every compiler. Returns (files, failures)."""
    failures: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ebnn-sweep-") as tmp:
        d = Path(tmp)
        sources, configs = _write_models(d, start, count, seed, small)
        units: list[tuple[str, list[str]]] = [("ebnn_runtime.c", ["ebnn_runtime.c"])]
        for kernels, files in sources.items():
            for i in range(0, len(files), per_unit):
                name = f"unit_{kernels}_{i}.c"
                (d / name).write_text(merged_unit(files[i : i + per_unit]))
                units.append((name, files[i : i + per_unit]))
        tasks = [(c, u) for u in units for c in compilers]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = pool.map(lambda t: (t[0], _compile_unit(t[0], d, *t[1])), tasks)
            for comp, fails in results:
                for src, err in fails:
                    failures.append({"compiler": comp.name, "file": src, "config": configs.get(src), "error": err})
        return sum(len(v) for v in sources.values()) + 1, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=2000, help="number of architectures (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the architectures (default 0)")
    p.add_argument("--start", type=int, default=0, help="index of the first architecture (default 0)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compiler processes (default: CPUs)")
    p.add_argument("--small", action="store_true", help="at most 9 channels a block (the test suite's profile)")
    p.add_argument("--require-all", action="store_true", help="exit 2 when a compiler is missing")
    p.add_argument("--opt", help="compile at this level (default: each target's own, -O2 or -Os; avr-gcc always -Os)")
    p.add_argument("--json", help="write the counts and failures to this file")
    args = p.parse_args(argv)
    compilers, missing = available(COMPILERS)
    # avr-gcc keeps -Os: at -O0 the AVR kernels' 28-operand asm statements cannot be register-allocated
    compilers = [c.at(args.opt) if args.opt and c.name != "avr" else c for c in compilers]
    if missing:
        print(f"warning: missing compilers: {', '.join(c.cc for c in missing)}", file=sys.stderr)
        if args.require_all:
            return 2
    t0 = time.perf_counter()
    done, failures = 0, []
    for chunk in range(args.start, args.start + args.count, 100):
        n = min(100, args.start + args.count - chunk)
        _, fails = sweep(n, args.seed, compilers, args.jobs, start=chunk, small=args.small)
        done += n
        failures += fails
        print(
            f"[{done}/{args.count}] architectures, {len(failures)} failures, {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
    summary = {
        "architectures": args.count,
        "seed": args.seed,
        "compilers": [c.name for c in compilers],
        "kernels": list(KERNELS),
        "failures": failures,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    for f in failures[:20]:
        print(f"FAIL {f['compiler']} {f['file']}: {json.dumps(f['config'])}\n{f['error'][:800]}")
    print(
        f"{args.count} architectures x {len(KERNELS)} kernel strategies x {len(compilers)} compilers: "
        f"{len(failures)} failures ({summary['seconds']} s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
