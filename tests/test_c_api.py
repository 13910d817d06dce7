"""The generated C API as a user calls it: NAME_infer, NAME_run, NAME_features, error codes, ties."""

from __future__ import annotations

import subprocess

import numpy as np
import torch
from conftest import random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen import bits, reference
from ebnn_codegen.cflags import STRICT_CFLAGS
from ebnn_codegen.codegen import render_model, write_files

MAIN = r"""
#include <stdio.h>
#include <string.h>
#include "ebnn_runtime.h"
#include "tiny.h"

int main(void)
{
    static uint8_t input[TINY_INPUT_BYTES];
    static uint8_t ws[TINY_WORKSPACE_BYTES], trace[TINY_TRACE_BYTES], feat[TINY_TRACE_BYTES];
    int32_t s1[TINY_NUM_CLASSES], s2[TINY_NUM_CLASSES];
    size_t i;
    int b, off = 0, p1, p2;
    if (fread(input, 1, sizeof input, stdin) != sizeof input) return 10;
    p1 = tiny_infer(input, s1);
    memset(ws, 0xA5, sizeof ws); /* stale workspace must not matter */
    p2 = tiny_run(input, s2, ws, trace);
    if (p1 != p2 || memcmp(s1, s2, sizeof s1) != 0) return 11;
    for (b = 0; b < TINY_NUM_HIDDEN; b++) {
        int n = tiny_features(input, b, feat, ws);
        if (n <= 0 || memcmp(feat, trace + off, (size_t)n) != 0) return 12;
        off += n;
    }
    if (off != TINY_TRACE_BYTES) return 13;
    if (tiny_features(input, TINY_NUM_HIDDEN, feat, ws) != EBNN_ERR_BLOCK) return 14;
    if (tiny_run(NULL, s1, ws, NULL) != EBNN_ERR_NULL) return 15;
    if (strcmp(ebnn_strerror(EBNN_ERR_NULL), "a required pointer argument is NULL") != 0) return 16;
    printf("%d", p1);
    for (i = 0; i < TINY_NUM_CLASSES; i++) printf(" %ld", (long)s1[i]);
    printf("\n");
    fwrite(trace, 1, sizeof trace, stderr);
    return 0;
}
"""


def test_c_api_from_a_user_program(tmp_path, tiny_config) -> None:
    user_program(tmp_path, tiny_config)


def test_c_api_wide_binary_window_under_sanitizers(tmp_path) -> None:
    """A binary window of 45 bytes (the runtime's gathered-words kernel, border masks included)
    under ASan and UBSan, with the C API's own checks."""
    config = {
        "name": "tiny",
        "input": [2, 6, 7],
        "layers": [
            {"type": "conv", "out_channels": 33, "kernel": 2, "padding": 1},
            {"type": "bconv", "out_channels": 12, "kernel": 3, "stride": [1, 2], "padding": 1},
            {"type": "blinear", "out_features": 9},
            {"type": "exit", "classes": 4},
        ],
    }
    user_program(tmp_path, config)


def user_program(tmp_path, config: dict) -> None:
    require_tools("cc", package="gcc")
    model = random_model(config, seed=11, extreme=True)
    graph = E.compile(model)
    files = render_model(graph)
    files["main.c"] = MAIN
    write_files(files, tmp_path)
    exe = tmp_path / "prog"
    flags = [*STRICT_CFLAGS, "-fsanitize=address,undefined"]
    subprocess.run(
        ["cc", *flags, "-I", str(tmp_path), *(str(tmp_path / f) for f in files if f.endswith(".c")), "-o", str(exe)],
        check=True,
    )
    x = np.random.default_rng(3).integers(0, 256, (1, *graph.input_shape), dtype=np.uint8)
    proc = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True)
    assert proc.returncode == 0, proc.returncode
    ref = reference.run(graph, x)
    fields = [int(v) for v in proc.stdout.split()]
    assert fields[0] == int(ref.pred[0]) and fields[1:] == ref.scores[0].tolist()
    expect = b"".join(
        bits.pack_activations(layer.reshape(1, *b.out_shape))[0].tobytes() for layer, b in zip(ref.layers, graph.hidden)
    )
    assert proc.stderr == expect


def test_argmax_ties_go_to_lowest_index(tiny_config) -> None:
    """Two classes with identical weights and batch norm: torch.argmax and the C both pick the first."""
    model = random_model(tiny_config, seed=2)
    ex = model.exit
    with torch.no_grad():
        for k in (2, 3):
            ex.linear.weight[k] = ex.linear.weight[1]
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(ex.bn, name)[k] = getattr(ex.bn, name)[1]
            ex.bn.bias[k] += 100.0  # classes 1..3 dominate, tied
            ex.bn.bias[1] += 100.0
    ex.bn.bias.data[2] = ex.bn.bias.data[1]
    ex.bn.bias.data[3] = ex.bn.bias.data[1]
    x = np.random.default_rng(0).integers(0, 256, (32, *model.spec.input_shape), dtype=np.uint8)
    res = E.run(model, x)
    assert np.all(res.scores[:, 1] == res.scores[:, 2])
    t_scores, _ = E.api.torch_outputs(model, x)
    assert np.array_equal(res.pred, t_scores.argmax(1))
    assert set(res.pred.tolist()) == {1}
