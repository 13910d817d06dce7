"""Generated C compiles warning-free for every architecture, under every compiler (issue 10).

A sweep of seeded random architectures with random batch-norm statistics (benchmarks/arch_sweep.py
says what it aims at) through gcc, clang and every cross compiler with
:data:`ebnn_codegen.cflags.STRICT_CFLAGS`, compile-only.  The long run (thousands of
architectures) is ``python benchmarks/arch_sweep.py --count 2000``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen.cflags import STRICT_CFLAGS
from ebnn_codegen.codegen import render_model, write_files

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import arch_sweep  # noqa: E402

SWEEP_COUNT = 200
SWEEP_SEED = 20261130

# issue 10: a 1-channel bconv whose channel is constant -1 left swar_nib/swar_fold unused
ISSUE_CONFIG = {
    "name": "m",
    "input": [2, 17, 14],
    "layers": [
        {
            "type": "conv",
            "out_channels": 16,
            "kernel": [3, 3],
            "stride": 1,
            "padding": 1,
            "pool": {"kernel": 2, "stride": 1, "padding": 0},
        },
        {
            "type": "bconv",
            "out_channels": 1,
            "kernel": [1, 3],
            "stride": 2,
            "padding": 0,
            "pool": {"kernel": 2, "stride": 1, "padding": 0},
        },
        {"type": "exit", "classes": 3},
    ],
}


def _require_compilers() -> list[arch_sweep.Compiler]:
    for comp in arch_sweep.COMPILERS:
        require_tools(comp.cc, package=comp.cc)
    return list(arch_sweep.COMPILERS)


@pytest.mark.parametrize("beta", [-0.5, 0.5])
def test_constant_channel_block_compiles_everywhere(beta: float, tmp_path: Path) -> None:
    """The issue's model (bconv channel constant -1 with β < 0; +1 with β > 0) under every compiler."""
    compilers = _require_compilers()
    model = random_model(ISSUE_CONFIG, seed=1)
    with torch.no_grad():
        model.blocks[1].bn.weight.fill_(0.0)
        model.blocks[1].bn.bias.fill_(beta)
    graph = E.compile(model)
    assert int(graph.blocks[1].constant[0]) == (1 if beta > 0 else -1)
    for kernels in ("fast", "reference"):
        d = tmp_path / kernels
        files = render_model(graph, kernels)
        write_files(files, d)
        for comp in compilers:
            for src in ("m.c", "ebnn_runtime.c"):
                cmd = [
                    comp.cc,
                    *STRICT_CFLAGS,
                    *comp.flags,
                    "-c",
                    "-I",
                    str(d),
                    str(d / src),
                    "-o",
                    str(tmp_path / "x.o"),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                assert proc.returncode == 0, f"{comp.name} {kernels} {src}:\n{proc.stderr}"


@pytest.mark.slow
def test_strict_flags_sweep() -> None:
    """200 seeded random architectures x both kernel strategies x every compiler: no warning.

    Every compiler at -O0 (the front-end warnings: unused, conversion, pedantic) and gcc at -O2
    too (the flow-based ones), to stay fast; avr-gcc at its own -Os (at -O0 the 28-operand asm
    statements of the AVR kernels cannot be register-allocated; debug builds for AVR need -Og
    or more).  The benchmark compiles everything at each target's own level."""
    compilers = _require_compilers()
    chosen = [c if c.name == "avr" else c.at("-O0") for c in compilers] + [compilers[0]]
    files, failures = arch_sweep.sweep(SWEEP_COUNT, SWEEP_SEED, chosen, jobs=os.cpu_count() or 2, small=True)
    assert files > SWEEP_COUNT
    assert failures == [], "\n".join(f"{f['compiler']} {f['file']} {f['config']}\n{f['error'][:600]}" for f in failures)


def test_sweep_reaches_every_kernel_branch() -> None:
    """The sweep's architectures exercise every branch of the fast path's kernel selection."""
    from ebnn_codegen.codegen import model_context
    from ebnn_codegen.codegen.kernel_plan import BinKernelPlan, U8KernelPlan

    seen: set[str] = set()
    for index in range(60):
        cfg = arch_sweep.random_arch(np.random.default_rng([SWEEP_SEED, index]), small=True)
        graph = E.compile(arch_sweep.random_bn_model(cfg, index))
        for b in model_context(graph, "fast", {})["blocks"]:
            s = b.spec
            seen.add("generic" if s is None else type(s).__name__)
            if isinstance(s, BinKernelPlan):
                seen |= {
                    k
                    for k, v in {
                        "asm": s.avr_asm,
                        "no-asm": not s.avr_asm,
                        "tail": s.has_tail,
                        "border": s.border_bounds,
                        "interior-only": not s.border_bounds,
                        "never-set": not s.uses_swar,
                        "no-interior": not s.has_interior_class,
                    }.items()
                    if v
                }
            if isinstance(s, U8KernelPlan) and s.pairs:
                seen.add("pairs")
    want = {
        "generic",
        "U8KernelPlan",
        "BinKernelPlan",
        "asm",
        "no-asm",
        "tail",
        "border",
        "interior-only",
        "never-set",
        "no-interior",
        "pairs",
    }
    assert want <= seen, want - seen
