"""Packages of the generated C for embedded ecosystems: Arduino, PlatformIO, ESP-IDF.

``export_package(graph, outdir, fmt)`` writes (all files or none, through
:func:`ebnn_codegen.codegen.write_files`):

``arduino``
    an Arduino library (1.5 format): ``library.properties``, ``src/`` with the
    model and the runtime, and ``examples/<name>_classify/<name>_classify.ino``,
    a sketch that classifies an embedded sample (in PROGMEM) and prints the
    class over Serial; with ``agent=True`` (the CLI's default) also
    ``examples/<name>_agent/``, the serial agent of ``ebnn-gen flash`` as a
    sketch, so a board flashed from the IDE answers ``ebnn-gen verify --port``.
``platformio``
    the same library plus ``library.json`` (PlatformIO's manifest).
``esp-idf``
    an ESP-IDF component: ``CMakeLists.txt`` (``idf_component_register``),
    ``idf_component.yml``, ``include/<name>.h``, ``src/`` and an example
    project ``examples/<name>_classify`` whose ``app_main`` prints the class.

The embedded sample is a fixed pseudo-random input unless one is given; the
class it should print comes from the compiler's integer reference
(:func:`ebnn_codegen.reference.run`), which the generated C matches bit for
bit.  The sketch and component templates live in ``firmware/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from .. import __version__, codegen, reference
from ..errors import CodegenError
from ..ir import Model
from ..resources import resource_dir
from ..targets.base import check_inputs

FORMATS = ("arduino", "platformio", "esp-idf")


def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader([str(resource_dir("firmware")), str(resource_dir("templates"))])
    return jinja2.Environment(
        loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )


def default_sample(graph: Model) -> np.ndarray:
    """The example's input: a fixed pseudo-random image (1, C, H, W)."""
    rng = np.random.default_rng(2024)
    return rng.integers(0, 256, size=(1, *graph.input_shape), dtype=np.uint8)


def package_files(
    graph: Model,
    fmt: str,
    kernels: str = "fast",
    target: str | None = None,
    sample: np.ndarray | None = None,
    agent: bool = False,
) -> dict[str, str]:
    """{relative path: text} of the package ``fmt`` for ``graph``."""
    if fmt not in FORMATS:
        raise CodegenError(f"unknown package format '{fmt}' (choose from: {', '.join(FORMATS)})")
    if sample is None:
        x = default_sample(graph)
    else:
        x = np.asarray(sample)
        x = check_inputs(graph, x[None] if x.ndim == 3 else x)
        if len(x) != 1:
            raise CodegenError(f"the example takes one sample, got {len(x)}")
    expected = int(reference.run(graph, x).pred[0])
    options = {"format": fmt} | ({"target": target} if target else {})
    model_files = codegen.render_model(graph, kernels, options)
    ctx: dict[str, Any] = codegen.model_context(graph, kernels, options)
    name = ctx["name"]
    sketch = f"{name}_classify"
    ctx.update(
        version=__version__,
        sketch=sketch,
        expected=expected,
        rows=codegen._hex(x.reshape(-1)),
        arduino=fmt != "esp-idf",
    )
    env = _environment()

    def render(template: str) -> str:
        return env.get_template(template).render(ctx)

    files: dict[str, str] = {}
    if fmt in ("arduino", "platformio"):
        for fname, text in model_files.items():
            files[f"src/{fname}"] = text
        files["library.properties"] = render("arduino/library.properties.j2")
        files[f"examples/{sketch}/{sketch}.ino"] = render("arduino/classify.ino.j2")
        files[f"examples/{sketch}/{name}_sample.h"] = render("common/sample.h.j2")
        if fmt == "platformio":
            files["library.json"] = render("arduino/library.json.j2")
        if agent:
            files.update(_agent_sketch(graph, kernels, ctx))
    else:
        for fname, text in model_files.items():
            files[f"include/{fname}" if fname == f"{name}.h" else f"src/{fname}"] = text
        files["CMakeLists.txt"] = render("esp-idf/CMakeLists.txt.j2")
        files["idf_component.yml"] = render("esp-idf/idf_component.yml.j2")
        files[f"examples/{sketch}/CMakeLists.txt"] = render("esp-idf/example_CMakeLists.txt.j2")
        files[f"examples/{sketch}/main/CMakeLists.txt"] = render("esp-idf/example_main_CMakeLists.txt.j2")
        files[f"examples/{sketch}/main/{sketch}_main.c"] = render("esp-idf/main.c.j2")
        files[f"examples/{sketch}/main/{name}_sample.h"] = render("common/sample.h.j2")
    return files


def _agent_sketch(graph: Model, kernels: str, ctx: dict[str, Any]) -> dict[str, str]:
    """examples/<name>_agent/: the serial agent (its C and its model binding, for a 16 MHz
    ATmega328P board's INFO) and a sketch that starts it."""
    from .. import boards
    from ..boards import firmware

    board = boards.get("uno")
    sketch = f"{ctx['name']}_agent"
    base = f"examples/{sketch}/"
    files = {f"{base}{k}": v for k, v in firmware.agent_files(graph, board, kernels, board.agent_baud).items()}
    files[f"{base}ebnn_agent.c"] = (resource_dir("firmware") / firmware.AGENT_SOURCE).read_text()
    env = _environment()
    files[f"{base}{sketch}.ino"] = env.get_template("agent/agent.ino.j2").render(
        ctx | {"agent_sketch": sketch, "baud": board.agent_baud}
    )
    return files


def export_package(
    graph: Model,
    outdir: str | os.PathLike,
    fmt: str,
    kernels: str = "fast",
    target: str | None = None,
    sample: np.ndarray | None = None,
    agent: bool = False,
) -> list[Path]:
    """Write the package ``fmt`` (arduino, platformio or esp-idf) of ``graph`` into ``outdir``.

    All files are written or none. ``target`` only goes into the provenance comments (the
    CLI checks that the model fits it first); ``sample`` is the example's input (uint8,
    C×H×W), a fixed pseudo-random one by default. Returns the paths written."""
    files = package_files(graph, fmt, kernels, target, sample, agent)
    return codegen.write_files(files, outdir)


__all__ = ["FORMATS", "default_sample", "export_package", "package_files"]
