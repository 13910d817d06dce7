"""The generated C compiles warning-free with gcc and clang under strict flags."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import random_config, random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen.cflags import STRICT_CFLAGS
from ebnn_codegen.codegen import render_model, write_files

# The project's strict flags, plus warnings that only the model's own C is held to.
FLAGS = [
    *STRICT_CFLAGS,
    "-Wshadow",
    "-Wstrict-prototypes",
    "-Wmissing-prototypes",
    "-Wcast-qual",
    "-O2",
    "-c",
]


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_strict_compile(cc, kernels, tmp_path, tiny_config) -> None:
    require_tools(cc, package=cc)
    for seed in range(3):
        cfg = tiny_config if seed == 0 else random_config(np.random.default_rng(seed), name=f"s{seed}")
        files = render_model(E.compile(random_model(cfg, seed=seed)), kernels)
        d = tmp_path / f"{seed}"
        write_files(files, d)
        for src in (f for f in files if f.endswith(".c")):
            proc = subprocess.run(
                [cc, *FLAGS, "-I", str(d), str(d / src), "-o", str(d / (src + ".o"))], capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stderr


def test_no_float_no_malloc_no_recursion(tmp_path, tiny_config) -> None:
    """Device code: no float types, no allocation; checked in the sources."""
    files = render_model(E.compile(random_model(tiny_config)), "fast")
    import re

    for name, text in files.items():
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        assert not re.search(r"\b(float|double)\b", code), name
        assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", code), name
