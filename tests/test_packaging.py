"""Arduino / PlatformIO / ESP-IDF packages of the generated C.

Layout and manifests are checked without tools; the Arduino example sketch is compiled
against the real Arduino AVR core (arduino-builder) and run in simavr, and the ESP-IDF
component is compiled with the RISC-V toolchain using ESP32-C3 flags and its example run
in qemu.
"""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from conftest import random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen import api, codegen, reference, targets
from ebnn_codegen.cflags import STRICT_CFLAGS
from ebnn_codegen.cli import main as cli_main
from ebnn_codegen.errors import CodegenError
from ebnn_codegen.packaging import FORMATS, default_sample, export_package, package_files

CONFIG = {
    "name": "pkgnet",
    "input": [1, 11, 9],
    "layers": [
        {
            "type": "conv",
            "out_channels": 6,
            "kernel": 3,
            "padding": 1,
            "pool": {"kernel": 3, "stride": 2, "padding": 1},
        },
        {"type": "bconv", "out_channels": 12, "kernel": [3, 2]},
        {"type": "blinear", "out_features": 20},
        {"type": "exit", "classes": 5},
    ],
}

STRICT = list(STRICT_CFLAGS)
ESP32C3 = [
    "-march=rv32imc_zicsr_zifencei",
    "-mabi=ilp32",
    "-Os",
    "-ffunction-sections",
    "-fdata-sections",
    "--specs=picolibc.specs",
]
ARDUINO_HW = "/usr/share/arduino/hardware/arduino/avr/platform.txt"


@pytest.fixture(scope="module")
def graph():
    return E.compile(random_model(CONFIG, 3))


def expected_class(graph, sample=None) -> int:
    x = default_sample(graph) if sample is None else sample[None]
    return int(reference.run(graph, x).pred[0])


def test_arduino_library_layout(graph, tmp_path):
    written = export_package(graph, tmp_path / "pkgnet", "arduino")
    root = tmp_path / "pkgnet"
    rel = sorted(str(p.relative_to(root)) for p in written)
    assert rel == sorted(
        [
            "library.properties",
            "src/pkgnet.h",
            "src/pkgnet.c",
            "src/ebnn_runtime.h",
            "src/ebnn_runtime.c",
            "examples/pkgnet_classify/pkgnet_classify.ino",
            "examples/pkgnet_classify/pkgnet_sample.h",
        ]
    )
    props = dict(line.split("=", 1) for line in (root / "library.properties").read_text().splitlines() if "=" in line)
    for key in ("name", "version", "author", "maintainer", "sentence", "paragraph", "category", "architectures"):
        assert props.get(key), key
    assert props["name"] == "pkgnet" and props["includes"] == "pkgnet.h" and props["version"] == E.__version__
    # the library's C is the model's C, unchanged apart from the provenance options
    plain = codegen.render_model(graph, "fast", {"format": "arduino"})
    for fname, text in plain.items():
        assert (root / "src" / fname).read_text() == text
    ino = (root / "examples/pkgnet_classify/pkgnet_classify.ino").read_text()
    assert "#include <pkgnet.h>" in ino and '#include "pkgnet_sample.h"' in ino
    assert "Serial.println(pred)" in ino and "pkgnet_infer(" in ino
    sample = (root / "examples/pkgnet_classify/pkgnet_sample.h").read_text()
    assert "PROGMEM" in sample
    assert f"#define PKGNET_SAMPLE_CLASS {expected_class(graph)}" in sample


def test_platformio_adds_library_json(graph, tmp_path):
    export_package(graph, tmp_path / "lib", "platformio")
    root = tmp_path / "lib"
    assert (root / "library.properties").is_file() and (root / "src/pkgnet.c").is_file()
    manifest = json.loads((root / "library.json").read_text())
    assert manifest["name"] == "pkgnet" and manifest["version"] == E.__version__
    assert manifest["frameworks"] == "*" and manifest["platforms"] == "*"
    assert manifest["build"]["srcDir"] == "src" and manifest["build"]["includeDir"] == "src"
    for example in manifest["examples"]:
        for f in example["files"]:
            assert (root / example["base"] / f).is_file()


def _yaml(text: str) -> dict:
    try:
        import yaml
    except ImportError:  # the manifest is flat enough to read by hand
        data: dict = {}
        for line in text.splitlines():
            m = re.match(r"^([a-z_]+):\s*(.*)$", line)
            if m:
                data[m[1]] = m[2].strip('"') if m[2] else {}
        return data
    return yaml.safe_load(text)


def test_esp_idf_component_layout_and_manifests(graph, tmp_path):
    export_package(graph, tmp_path / "pkgnet", "esp-idf")
    root = tmp_path / "pkgnet"
    cmake = (root / "CMakeLists.txt").read_text()
    m = re.search(r"idf_component_register\((.*?)\)", cmake, re.S)
    assert m, cmake
    args = m[1]
    srcs = re.search(r"SRCS((?:\s+\"[^\"]+\")+)", args)[1].split()
    assert sorted(s.strip('"') for s in srcs) == ["src/ebnn_runtime.c", "src/pkgnet.c"]
    for s in srcs:
        assert (root / s.strip('"')).is_file()
    assert re.search(r'INCLUDE_DIRS\s+"include"', args) and (root / "include/pkgnet.h").is_file()
    assert re.search(r'PRIV_INCLUDE_DIRS\s+"src"', args) and (root / "src/ebnn_runtime.h").is_file()
    manifest = _yaml((root / "idf_component.yml").read_text())
    assert str(manifest["version"]) == E.__version__
    assert "pkgnet" in manifest["description"]
    if isinstance(manifest.get("dependencies"), dict) and manifest["dependencies"]:
        assert manifest["dependencies"]["idf"].startswith(">=")
    example = root / "examples/pkgnet_classify"
    assert "project(pkgnet_classify)" in (example / "CMakeLists.txt").read_text()
    assert "EXTRA_COMPONENT_DIRS" in (example / "CMakeLists.txt").read_text()
    assert '"pkgnet_classify_main.c"' in (example / "main/CMakeLists.txt").read_text()
    main = (example / "main/pkgnet_classify_main.c").read_text()
    assert "void app_main(void)" in main and "pkgnet_infer(" in main
    assert "PROGMEM" not in (example / "main/pkgnet_sample.h").read_text()


def test_export_is_all_or_nothing_and_checks_the_format(graph, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CodegenError, match="not a directory"):
        export_package(graph, blocker, "arduino")
    with pytest.raises(CodegenError, match="unknown package format"):
        export_package(graph, tmp_path / "out", "zephyr")
    assert not (tmp_path / "out").exists()
    assert set(FORMATS) == {"arduino", "platformio", "esp-idf"}


def test_custom_sample(graph):
    sample = api.random_inputs(graph.input_shape, 4, seed=11)[3]
    files = package_files(graph, "arduino", sample=sample)
    text = files["examples/pkgnet_classify/pkgnet_sample.h"]
    assert f"#define PKGNET_SAMPLE_CLASS {expected_class(graph, sample)}" in text
    assert f"0x{int(sample.reshape(-1)[0]):02x}," in text
    with pytest.raises(CodegenError):
        package_files(graph, "arduino", sample=np.zeros(5, np.uint8))


def test_cli_export_formats(tmp_path):
    ckpt = tmp_path / "m.pt"
    E.save(random_model(CONFIG, 3), ckpt)
    for fmt in FORMATS:
        out = tmp_path / fmt
        assert cli_main(["-q", "export", str(ckpt), "--format", fmt, "-o", str(out)]) == 0
        assert (out / ("CMakeLists.txt" if fmt == "esp-idf" else "library.properties")).is_file()
    assert (tmp_path / "platformio" / "library.json").is_file()


# ---------------------------------------------------------------------------------------
# with the real toolchains
# ---------------------------------------------------------------------------------------


def arduino_builder(sketch, libraries, build):
    build.mkdir(parents=True, exist_ok=True)
    cmd = [
        "arduino-builder",
        "-compile",
        "-hardware",
        "/usr/share/arduino/hardware",
        "-tools",
        "/usr/bin",
        "-fqbn",
        "arduino:avr:uno",
        "-libraries",
        str(libraries),
        "-build-path",
        str(build),
        # Debian's arduino-builder lacks the IDE's ctags recipe; core 1.8.7 needs DECIMAL_DIG with avr-gcc 5.4
        "-prefs",
        'tools.ctags.pattern="/usr/bin/arduino-ctags" -u --language-force=c++ -f - --c++-kinds=svpf '
        '--fields=KSTtzns --line-directives "{source_file}"',
        "-prefs",
        "compiler.cpp.extra_flags=-DDECIMAL_DIG=17",
        str(sketch),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.arduino
@pytest.mark.emulator
def test_arduino_sketch_builds_against_the_core_and_prints_the_class(graph, tmp_path):
    require_tools("arduino-builder", "arduino-ctags", ARDUINO_HW, package="arduino-builder arduino-core-avr")
    avr = targets.get("avr")
    require_tools(*avr.tools, package=avr.packages)
    export_package(graph, tmp_path / "libraries" / "pkgnet", "arduino")
    sketch = tmp_path / "libraries/pkgnet/examples/pkgnet_classify/pkgnet_classify.ino"
    log = arduino_builder(sketch, tmp_path / "libraries", tmp_path / "build")
    assert "Sketch uses" in log
    elf = tmp_path / "build" / "pkgnet_classify.ino.elf"
    # the weights stay in flash: the library adds only its workspace to the sketch's RAM
    syms = {name: kind for name, kind, _ in avr.symbols(elf)}
    assert syms["pkgnet_w1"].lower() == "t" and syms["pkgnet_workspace"].lower() == "b"
    emu = avr.emulate(elf, timeout_s=120)
    assert emu.returncode == 0, emu.text
    host = int(api.run(graph, default_sample(graph)).pred[0])
    lines = emu.output.decode().splitlines()
    assert f"class {host}" in lines and f"expected {host}" in lines


@pytest.mark.espidf
def test_esp_idf_component_compiles_for_esp32c3_and_runs(graph, tmp_path):
    rv = targets.get("rv32imc")
    require_tools("riscv64-unknown-elf-gcc", package="gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf")
    export_package(graph, tmp_path / "pkgnet", "esp-idf")
    root = tmp_path / "pkgnet"
    main_dir = root / "examples/pkgnet_classify/main"
    for src in [root / "src/pkgnet.c", root / "src/ebnn_runtime.c", main_dir / "pkgnet_classify_main.c"]:
        cmd = [
            "riscv64-unknown-elf-gcc",
            *ESP32C3,
            *STRICT,
            f"-I{root / 'include'}",
            f"-I{root / 'src'}",
            f"-I{main_dir}",
            "-c",
            str(src),
            "-o",
            str(tmp_path / (src.stem + ".o")),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    # the example's app_main, linked with picolibc and run in qemu, prints the host build's class
    require_tools(*rv.tools, package=rv.packages)
    files = {p.name: p.read_text() for p in [*root.glob("src/*"), *root.glob("include/*"), *main_dir.glob("*.[ch]")]}
    files["esp_idf_stub.c"] = "void app_main(void);\nint main(void)\n{\n    app_main();\n    return 0;\n}\n"
    emu = rv.emulate(rv.build_program(files), timeout_s=60)
    assert emu.returncode == 0, emu.text
    host = int(api.run(graph, default_sample(graph)).pred[0])
    assert f"class {host}\nexpected {host}\n" in emu.text
