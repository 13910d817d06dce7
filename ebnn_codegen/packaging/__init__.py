"""Packages of the generated C for embedded ecosystems: Arduino, PlatformIO, ESP-IDF.

``export_package(graph, outdir, fmt)`` writes (all files or none, through
:func:`ebnn_codegen.codegen.write_files`):

``arduino``
    an Arduino library (1.5 format): ``library.properties``, ``src/`` with the
    model and the runtime, and ``examples/<name>_classify/<name>_classify.ino``,
    a sketch that classifies an embedded sample (in PROGMEM) and prints the
    class over Serial, and ``examples/<name>_serial``, a sketch that reads images
    over Serial and prints class and scores (with ``send_image.py`` for the PC);
    with ``agent=True`` (the CLI's default) also ``examples/<name>_agent/``, the
    serial agent of ``ebnn-gen flash`` as a sketch, so a board flashed from the
    IDE answers ``ebnn-gen verify --port``.
``platformio``
    the same library plus ``library.json`` (PlatformIO's manifest).
``esp-idf``
    an ESP-IDF component: ``CMakeLists.txt`` (``idf_component_register``),
    ``idf_component.yml``, ``include/<name>.h``, ``src/`` and an example
    project ``examples/<name>_classify`` whose ``app_main`` prints the class.
``c``
    the plain C files of ``ebnn-gen export`` (no example program).

Every package has a ``README.md``: the API, the input layout, memory figures (a
target's measured or predicted numbers when the CLI checked the fit) and how to run
the example. The embedded sample is a real test image of the model's task where one
is known (:mod:`ebnn_codegen.packaging.samples`), or one given by the user; the
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

from .. import codegen, costs, reference, targets
from ..codegen.model_plan import hex_rows
from ..codegen.traits import PORTABLE
from ..errors import CodegenError
from ..ir import Model
from ..resources import resource_dir
from ..version import __version__
from . import samples

FORMATS = ("arduino", "platformio", "esp-idf")


def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader([str(resource_dir("firmware")), str(resource_dir("templates"))])
    return jinja2.Environment(
        loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )


def default_sample(graph: Model) -> np.ndarray:
    """The example's input when nothing better is known: a fixed pseudo-random image (1, C, H, W)."""
    return samples.noise(graph)


_FORMAT_TITLE = {
    "c": "plain C files",
    "arduino": "Arduino library",
    "platformio": "PlatformIO / Arduino library",
    "esp-idf": "ESP-IDF component",
}


def _memory_rows(graph: Model, fit: dict[str, Any] | None) -> list[str]:
    """README lines: the model's own constants and RAM, and a target's numbers when checked."""
    t = costs.report(graph)["totals"]
    rows = [
        f"model constants (weights, thresholds; flash, `EBNN_FLASH` = PROGMEM on AVR): {t['flash_bytes']:,} B",
        f"static RAM: the workspace, {t['static_ram_bytes']:,} B (`{graph.name.upper()}_WORKSPACE_BYTES`)",
        f"your buffers: the input {graph.input_bytes:,} B and the scores {4 * graph.num_classes} B",
        "code: a few KB, depending on the compiler and the chip (measure it: `ebnn-gen report MODEL --target T`)",
    ]
    if fit:
        how = "measured in the emulator" if fit.get("measured") else "predicted from the model (code and stack on top)"
        rows.append(
            f"on {fit['target']} ({fit['chip']}), {how}: flash {fit['flash_bytes']:,} B of "
            f"{fit['flash_budget_bytes']:,} B available; RAM {fit['sram_needed_bytes']:,} B of "
            f"{fit['sram_budget_bytes']:,} B available (input, scores and stack included)"
        )
    return rows


def _listing(files: dict[str, str], name: str) -> list[tuple[str, str]]:
    what = {
        f"{name}.h": "the API (sizes, entry points)",
        f"{name}.c": "the network: weights, thresholds and the inference code",
        "ebnn_runtime.h": "shared kernels and error codes (header)",
        "ebnn_runtime.c": "shared kernels",
        "library.properties": "Arduino library manifest",
        "library.json": "PlatformIO library manifest",
        "CMakeLists.txt": "ESP-IDF component build (`idf_component_register`)",
        "idf_component.yml": "ESP-IDF component manager manifest",
        f"{name}_sample.h": "the example's input, in flash",
        "send_image.py": "sends a .npy image to the serial sketch and prints the answer (pyserial)",
    }
    rows = []
    for path in sorted(files):
        base = path.rsplit("/", 1)[-1]
        if base.endswith(".ino") and "serial" in base:
            rows.append((path, "sketch: reads images over Serial, prints class and scores"))
        elif base.endswith(".ino") or base.endswith("_main.c"):
            rows.append((path, "example: classifies the embedded sample, prints the class"))
        elif base in what:
            rows.append((path, what[base]))
    return rows


def _example_text(fmt: str, name: str, sketch: str, serial: str, expected: int) -> str:
    if fmt == "c":
        return (
            f"Compile `{name}.c` and `ebnn_runtime.c` with your firmware (C99; `-I` this folder) and call "
            f"`{name}_infer` as above. The plain C export has no example program: `ebnn-gen export MODEL "
            f"--format arduino|platformio|esp-idf` adds one."
        )
    if fmt in ("arduino", "platformio"):
        install = (
            "copy this folder into your Arduino `libraries/` folder (or Sketch > Include Library > Add .ZIP "
            "Library), then File > Examples > " + name
            if fmt == "arduino"
            else f"put this folder in your PlatformIO project's `lib/` (or `lib_deps = file://...`) and "
            f"`#include <{name}.h>`"
        )
        return (
            f"To use it, {install}.\n\n"
            f"- `examples/{sketch}`: classifies the embedded sample and prints `class {expected}` and "
            f"`expected {expected}` at 115200 baud (Serial Monitor). Replace `{name}_sample` with your own "
            f"input, e.g. from a sensor, in the input layout above.\n"
            f"- `examples/{serial}`: waits for images over Serial (115200 baud, raw bytes in the input "
            f"layout), prints `class K` and `scores ...` for each; `python examples/{serial}/send_image.py "
            f"PORT IMAGES.npy [INDEX]` sends one from a PC.\n\n"
            f"With arduino-cli: `arduino-cli compile --fqbn arduino:avr:uno --library . examples/{sketch}`."
        )
    return (
        f"Copy this folder into your project's `components/` (or list it in `EXTRA_COMPONENT_DIRS`), "
        f'`#include "{name}.h"` and call `{name}_infer`.\n\n'
        f"- `examples/{sketch}`: `cd examples/{sketch} && idf.py set-target esp32c3 && idf.py build flash "
        f"monitor` prints `class {expected}` and `expected {expected}`."
    )


def package_files(
    graph: Model,
    fmt: str,
    kernels: str = "fast",
    target: str | None = None,
    sample: np.ndarray | str | os.PathLike[str] | samples.Sample | None = None,
    *,
    task: dict[str, Any] | None = None,
    fit: dict[str, Any] | None = None,
    license: str | None = None,  # noqa: A002 - the manifests' word
    source: str | None = None,
    agent: bool = False,
) -> dict[str, str]:
    """{relative path: text} of the package ``fmt`` for ``graph``.

    ``sample``: the example's input (see :func:`ebnn_codegen.packaging.samples.resolve`; with
    ``task``, the checkpoint's training record, a real test image of the model's task where one
    is known); ``fit``: a target's fit-check numbers for the README; ``license``: an SPDX id
    written into the manifests (none by default: the generated code is the user's);
    ``source``: the checkpoint's name for the README. Format ``c`` is the plain C files plus
    the README."""
    if fmt not in FORMATS + ("c",):
        raise CodegenError(f"unknown package format '{fmt}' (choose from: {', '.join(FORMATS)})")
    if license is not None and not license.replace("-", "").replace(".", "").replace("+", "").isalnum():
        raise CodegenError(f"--license: not an SPDX license id: {license!r}")
    plain = fmt == "c"
    smp = None if plain else samples.resolve(graph, sample, task)
    x = smp.x if smp is not None else samples.noise(graph)
    expected = int(reference.run(graph, x).pred[0])
    # the plain files keep the provenance of `ebnn_codegen.export` (byte-identical to it)
    options = {} if plain else {"format": fmt} | ({"target": target} if target else {})
    # with a target: the kernels its builds verify (its traits); without: the portable C
    traits = targets.get(target).traits if target else PORTABLE
    model_files = codegen.render_model(graph, kernels, options, traits)
    ctx: dict[str, Any] = codegen.model_context(graph, kernels, options, traits)
    name = ctx["name"]
    sketch = f"{name}_classify"
    serial = f"{name}_serial"
    ctx.update(
        version=__version__,
        sketch=sketch,
        serial_sketch=serial,
        expected=expected,
        rows=hex_rows(x.reshape(-1)),
        arduino=fmt != "esp-idf",
        sample=smp,
        license=license,
    )
    env = _environment()

    def render(template: str) -> str:
        return env.get_template(template).render(ctx)

    files: dict[str, str] = {}
    if plain:
        files.update(model_files)
    elif fmt in ("arduino", "platformio"):
        for fname, text in model_files.items():
            files[f"src/{fname}"] = text
        files["library.properties"] = render("arduino/library.properties.j2")
        files[f"examples/{sketch}/{sketch}.ino"] = render("arduino/classify.ino.j2")
        files[f"examples/{sketch}/{name}_sample.h"] = render("common/sample.h.j2")
        files[f"examples/{serial}/{serial}.ino"] = render("arduino/serial.ino.j2")
        files[f"examples/{serial}/send_image.py"] = render("arduino/send_image.py.j2")
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
    ctx.update(
        title=_FORMAT_TITLE[fmt],
        source=f"`{source}`" if source else "a trained model",
        listing=_listing(files, name),
        memory=_memory_rows(graph, fit),
        example=_example_text(fmt, name, sketch, serial, expected),
    )
    files["README.md"] = render("common/README.md.j2")
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
    outdir: str | os.PathLike[str],
    fmt: str,
    kernels: str = "fast",
    target: str | None = None,
    sample: np.ndarray | str | os.PathLike[str] | samples.Sample | None = None,
    **options: Any,
) -> list[Path]:
    """Write the package ``fmt`` (arduino, platformio, esp-idf, or c: the plain files and a
    README) of ``graph`` into ``outdir``.

    All files are written or none. ``target`` only goes into the provenance comments (the
    CLI checks that the model fits it first); ``sample`` is the example's input (uint8,
    C×H×W, a .npy path or ``DATASET[:INDEX]``); ``options`` as for :func:`package_files`
    (``task``, ``fit``, ``license``, ``source``, ``agent``). Returns the paths written."""
    files = package_files(graph, fmt, kernels, target, sample, **options)
    return codegen.write_files(files, outdir)


__all__ = ["FORMATS", "default_sample", "export_package", "package_files", "samples"]
