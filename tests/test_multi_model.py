"""Several models in one program (issue 10): two packages, each with its own copy of the runtime.

The runtime's definitions are weak (``EBNN_SHARED``), so two exported models link into one
host program (ASan + UBSan, both classify as the reference says) and into one Arduino sketch
built on the real core with arduino-builder (both classify as the host build says, in simavr).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import random_model, require_tools
from test_packaging import ARDUINO_HW, arduino_builder

import ebnn_codegen as E
from ebnn_codegen import api, reference, targets
from ebnn_codegen.cflags import STRICT_CFLAGS
from ebnn_codegen.codegen import hex_rows, render_model, write_files
from ebnn_codegen.packaging import export_package

CONFIGS = {
    "alpha": {
        "name": "alpha",
        "input": [1, 8, 8],
        "layers": [
            {"type": "conv", "out_channels": 8, "kernel": 3, "padding": 1, "pool": {"kernel": 2, "stride": 2}},
            {"type": "bconv", "out_channels": 16, "kernel": 3, "padding": 1},
            {"type": "exit", "classes": 4},
        ],
    },
    "beta": {
        "name": "beta",
        "input": [2, 6, 7],
        "layers": [
            {"type": "conv", "out_channels": 5, "kernel": [2, 3]},
            {"type": "blinear", "out_features": 12},
            {"type": "exit", "classes": 3},
        ],
    },
}
SAN = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


@pytest.fixture(scope="module")
def graphs() -> dict:
    return {name: E.compile(random_model(cfg, seed=7)) for name, cfg in CONFIGS.items()}


def _samples(graph, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *graph.input_shape), dtype=np.uint8)


def _main(graphs: dict, samples: dict) -> str:
    """A C program classifying each model's samples and printing ``name class``, one a line."""
    lines = ["#include <stdio.h>", "#include <string.h>", '#include "ebnn_runtime.h"']
    lines += [f'#include "{name}.h"' for name in graphs]
    for name, x in samples.items():
        rows = "\n".join(hex_rows(x.reshape(-1)))
        lines.append(f"static const uint8_t {name}_xs[] = {{\n{rows}\n}};")
    lines.append("int main(void)\n{\n    int i;")
    for name, x in samples.items():
        up = name.upper()
        lines.append(f"    for (i = 0; i < {len(x)}; i++) {{")
        lines.append(f"        static int32_t s[{up}_NUM_CLASSES];")
        lines.append(f'        printf("{name} %d\\n", {name}_infer({name}_xs + i * {up}_INPUT_BYTES, s));')
        lines.append("    }")
    lines.append('    printf("%s\\n", ebnn_strerror(EBNN_ERR_NULL));\n    return 0;\n}')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_two_models_link_into_one_host_program(graphs, kernels: str, tmp_path: Path) -> None:
    require_tools("gcc", package="gcc")
    sources = []
    for name, graph in graphs.items():  # each package in its own folder, with its own runtime copy
        d = tmp_path / name
        write_files(render_model(graph, kernels), d)
        sources += [d / f"{name}.c", d / "ebnn_runtime.c"]
    samples = {name: _samples(g, 5, i) for i, (name, g) in enumerate(graphs.items())}
    (tmp_path / "main.c").write_text(_main(graphs, samples))
    exe = tmp_path / "both"
    incs = [f"-I{tmp_path / name}" for name in graphs]
    cmd = ["gcc", *STRICT_CFLAGS, *SAN, *incs, *map(str, sources), str(tmp_path / "main.c"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout.splitlines()
    want = [f"{name} {p}" for name, g in graphs.items() for p in reference.run(g, samples[name]).pred.tolist()]
    assert out == want + ["a required pointer argument is NULL"]


SKETCH = """#include <alpha.h>
#include <beta.h>
#include <avr/interrupt.h>
#include <avr/sleep.h>

{samples}

static uint8_t input[ALPHA_INPUT_BYTES > BETA_INPUT_BYTES ? ALPHA_INPUT_BYTES : BETA_INPUT_BYTES];
static int32_t scores[8];

void setup()
{{
    Serial.begin(115200);
    memcpy_P(input, alpha_x, ALPHA_INPUT_BYTES);
    Serial.print(F("alpha "));
    Serial.println(alpha_infer(input, scores));
    memcpy_P(input, beta_x, BETA_INPUT_BYTES);
    Serial.print(F("beta "));
    Serial.println(beta_infer(input, scores));
    Serial.flush();
    set_sleep_mode(SLEEP_MODE_PWR_DOWN);
    cli();
    sleep_mode();
}}

void loop()
{{
}}
"""


@pytest.mark.arduino
@pytest.mark.slow
def test_two_model_libraries_in_one_sketch(graphs, tmp_path: Path) -> None:
    require_tools("arduino-builder", "arduino-ctags", ARDUINO_HW, package="arduino-builder arduino-core-avr")
    avr = targets.get("avr")
    require_tools(*avr.tools, package=avr.packages)
    samples = {name: _samples(g, 1, 10 + i) for i, (name, g) in enumerate(graphs.items())}
    text = []
    for name, graph in graphs.items():
        export_package(graph, tmp_path / "libraries" / name, "arduino")
        rows = "\n".join(hex_rows(samples[name].reshape(-1)))
        text.append(f"static const uint8_t {name}_x[] PROGMEM = {{\n{rows}\n}};")
    sketch = tmp_path / "both" / "both.ino"
    sketch.parent.mkdir()
    sketch.write_text(SKETCH.format(samples="\n".join(text)))
    log = arduino_builder(sketch, tmp_path / "libraries", tmp_path / "build")
    assert "Sketch uses" in log
    emu = avr.emulate(tmp_path / "build" / "both.ino.elf", timeout_s=120)
    assert emu.returncode == 0, emu.text
    lines = emu.output.decode().splitlines()
    for name, graph in graphs.items():
        host = int(api.run(graph, samples[name]).pred[0])
        assert f"{name} {host}" in lines, lines
