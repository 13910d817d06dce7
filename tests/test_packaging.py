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
from pathlib import Path

import numpy as np
import pytest
from conftest import random_model, require_tools

import ebnn_codegen as E
from ebnn_codegen import api, codegen, reference, targets
from ebnn_codegen.cflags import STRICT_CFLAGS
from ebnn_codegen.cli import main as cli_main
from ebnn_codegen.errors import CodegenError
from ebnn_codegen.packaging import FORMATS, default_sample, export_package, package_files, samples

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
            "README.md",
            "library.properties",
            "src/pkgnet.h",
            "src/pkgnet.c",
            "src/ebnn_runtime.h",
            "src/ebnn_runtime.c",
            "examples/pkgnet_classify/pkgnet_classify.ino",
            "examples/pkgnet_classify/pkgnet_sample.h",
            "examples/pkgnet_serial/pkgnet_serial.ino",
            "examples/pkgnet_serial/send_image.py",
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
    sender = (root / "examples/pkgnet_serial/send_image.py").read_text()
    compile(sender, "send_image.py", "exec")  # valid Python
    assert "SHAPE = (1, 11, 9)" in sender and "115200" in sender
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


DIGITS = {
    "name": "digitnet",
    "input": [1, 8, 8],
    "layers": [
        {"type": "conv", "out_channels": 4, "kernel": 3, "padding": 1},
        {"type": "exit", "classes": 10},
    ],
}


@pytest.mark.parametrize("fmt", [*FORMATS, "c"])
def test_every_package_has_a_readme(graph, fmt):
    files = package_files(graph, fmt, sample=default_sample(graph)[0])
    readme = files["README.md"]
    totals = api.report(graph)["totals"]
    # the API, the input layout, the memory figures and how to run the example
    for text in (
        "int pkgnet_infer(const uint8_t *input, int32_t *scores)",
        "pkgnet_run(",
        "PKGNET_INPUT_BYTES` = 99 bytes",
        "uint8 pixels 1x11x9 in\n  C, H, W order",
        "input[(c * 11 + y) * 9 + x]",
        f"model constants (weights, thresholds; flash, `EBNN_FLASH` = PROGMEM on AVR): {totals['flash_bytes']:,} B",
        f"static RAM: the workspace, {totals['static_ram_bytes']:,} B",
        "## License",
    ):
        assert text in readme, (fmt, text)
    listed = re.findall(r"^- `([^`]+)`: ", readme.split("## Files", 1)[1].split("## ", 1)[0], re.M)
    assert sorted(listed) == sorted(f for f in files if f != "README.md")  # every file, described
    if fmt == "c":
        assert sorted(files) == ["README.md", "ebnn_runtime.c", "ebnn_runtime.h", "pkgnet.c", "pkgnet.h"]
        assert "no example program" in readme
    else:
        assert "examples/pkgnet_classify" in readme and f"class {expected_class(graph)}" in readme
    if fmt in ("arduino", "platformio"):
        assert "examples/pkgnet_serial" in readme and "send_image.py" in readme


def test_readme_carries_the_targets_numbers(graph):
    fit = {
        "target": "avr",
        "chip": "ATmega328P",
        "flash_bytes": 4321,
        "sram_needed_bytes": 765,
        "flash_budget_bytes": 30208,
        "sram_budget_bytes": 1664,
        "measured": True,
    }
    readme = package_files(graph, "arduino", sample=default_sample(graph)[0], fit=fit)["README.md"]
    assert "on avr (ATmega328P), measured in the emulator: flash 4,321 B of 30,208 B available" in readme
    assert "RAM 765 B of 1,664 B available" in readme


def test_manifests_declare_no_license_unless_asked(graph):
    files = package_files(graph, "platformio", sample=default_sample(graph)[0])
    assert "license" not in json.loads(files["library.json"])
    files = package_files(graph, "platformio", sample=default_sample(graph)[0], license="Apache-2.0")
    assert json.loads(files["library.json"])["license"] == "Apache-2.0"
    idf = package_files(graph, "esp-idf", sample=default_sample(graph)[0], license="MIT")["idf_component.yml"]
    assert 'license: "MIT"' in idf
    assert "license" not in package_files(graph, "esp-idf", sample=default_sample(graph)[0])["idf_component.yml"]
    with pytest.raises(CodegenError, match="SPDX"):
        package_files(graph, "arduino", sample=default_sample(graph)[0], license="MIT; rm -rf")


def test_the_example_uses_a_test_image_of_the_recorded_dataset(tmp_path):
    """A checkpoint that records its training data gets a real test image of it, labelled."""
    from ebnn_codegen.data import mnist

    model = random_model(DIGITS, 5)
    model.config["meta"] = {"training": {"dataset": "digits"}}
    ckpt = tmp_path / "digitnet.pt"
    E.save(model, ckpt)
    graph = E.compile(ckpt)
    task = samples.checkpoint_task(ckpt)
    assert task == {"dataset": "digits"}
    files = package_files(graph, "arduino", task=task)
    header = files["examples/digitnet_classify/digitnet_sample.h"]
    m = re.search(r"scikit-learn digits test image #(\d+), label (\d)", header)
    assert m, header
    x, y = mnist.load("digits", "test")
    index, label = int(m[1]), int(m[2])
    assert label == y[index]
    assert f"#define DIGITNET_SAMPLE_LABEL {label}" in header
    pixels = [int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", header.split("= {", 1)[1])]
    assert pixels == x[index].reshape(-1).tolist()
    # the first test image the model gets right, when it gets one of the first 64 right
    pred = reference.run(graph, x[:64]).pred
    right = np.flatnonzero(pred == y[:64])
    assert index == (int(right[0]) if len(right) else 0)
    ino = files["examples/digitnet_classify/digitnet_classify.ino"]
    assert f"scikit-learn digits test image #{index}" in ino and "label " in ino
    assert f"is scikit-learn digits test image #{index}" in files["README.md"]
    # an explicit DATASET:INDEX, and noise (said so) when nothing is known
    assert (
        "test image #5,"
        in package_files(graph, "arduino", sample="digits:5")["examples/digitnet_classify/digitnet_sample.h"]
    )
    plain = package_files(graph, "arduino")["examples/digitnet_classify/digitnet_sample.h"]
    assert "pseudo-random input (not a real image)" in plain and "does not record its training data" in plain
    with pytest.raises(CodegenError, match="0..359"):
        package_files(graph, "arduino", sample="digits:360")
    with pytest.raises(CodegenError, match="the model takes 1x11x9"):
        samples.from_dataset(E.compile(random_model(CONFIG, 3)), "digits")


def test_cli_export_sample_option(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    E.save(random_model(CONFIG, 3), ckpt)
    graph = E.compile(ckpt)
    x = api.random_inputs(graph.input_shape, 3, seed=4)[2]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "lib"
    assert (
        cli_main(
            ["-q", "export", str(ckpt), "--format", "arduino", "--sample", str(tmp_path / "x.npy"), "-o", str(out)]
        )
        == 0
    )
    header = (out / "examples/pkgnet_classify/pkgnet_sample.h").read_text()
    assert "The example's input: the input in x.npy." in header
    assert f"#define PKGNET_SAMPLE_CLASS {expected_class(graph, x)}" in header
    assert "from `m.pt`" in (out / "README.md").read_text()
    # a wrong sample: one error line, exit 2, nothing written
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.uint8))
    capsys.readouterr()
    for bad in (str(tmp_path / "bad.npy"), str(tmp_path / "missing.npy"), "digits:x"):
        assert (
            cli_main(["-q", "export", str(ckpt), "--format", "arduino", "--sample", bad, "-o", str(tmp_path / "no")])
            == 2
        )
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        assert not (tmp_path / "no").exists()
    # the plain C export gets its README too
    assert cli_main(["-q", "export", str(ckpt), "-o", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "README.md").read_text().startswith("# pkgnet: plain C files")
    capsys.readouterr()
    assert cli_main(["-q", "export", str(ckpt), "--sample", "digits", "-o", str(tmp_path / "c2")]) == 2
    assert capsys.readouterr().err.startswith("error: --sample is the input of a package's example")


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
    # the weights stay in flash: the library adds only its workspace to the sketch's RAM (on AVR
    # the conv blocks' weights are immediates in their code; the linear block's rows are read)
    # (names without the suffixes of -flto's partitions: pkgnet_workspace.lto_priv.25)
    syms = {name.split(".")[0]: kind for name, kind, _ in avr.symbols(elf)}
    assert syms["pkgnet_w2"].lower() == "t" and syms["pkgnet_workspace"].lower() == "b"
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


def uart_feeder(tmp_path: Path) -> Path:
    """tests/support/simavr_uart_feed.c, built with libsimavr."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "simavr"], capture_output=True, text=True, check=True)
    exe = tmp_path / "simavr_uart_feed"
    src = Path(__file__).parent / "support" / "simavr_uart_feed.c"
    cmd = ["cc", "-O2", *[f for f in flags.stdout.split() if f.startswith("-I")], str(src), "-o", str(exe)]
    cmd += [f for f in flags.stdout.split() if not f.startswith("-I")] + ["-lelf"]
    subprocess.run(cmd, check=True, capture_output=True)
    return exe


@pytest.mark.arduino
@pytest.mark.emulator
def test_serial_sketch_classifies_images_sent_over_the_uart(graph, tmp_path):
    """The serial example, built on the real core, answers each image typed into its UART with the
    host build's class and scores, and drops a partial image after its timeout with one error line."""
    require_tools("arduino-builder", "arduino-ctags", ARDUINO_HW, package="arduino-builder arduino-core-avr")
    avr = targets.get("avr")
    require_tools(*avr.tools, package=avr.packages)
    export_package(graph, tmp_path / "libraries" / "pkgnet", "arduino", sample=default_sample(graph)[0])
    sketch = tmp_path / "libraries/pkgnet/examples/pkgnet_serial/pkgnet_serial.ino"
    arduino_builder(sketch, tmp_path / "libraries", tmp_path / "build")
    x = api.random_inputs(graph.input_shape, 3, seed=9)
    (tmp_path / "in.bin").write_bytes(x.tobytes() + x[0].tobytes()[:10])
    proc = subprocess.run(
        [str(uart_feeder(tmp_path)), str(tmp_path / "build/pkgnet_serial.ino.elf"), str(tmp_path / "in.bin")]
        + [str(graph.input_bytes), str(10**9)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "ready pkgnet: send 99 bytes (1x11x9 uint8, C,H,W order)"
    host = api.run(graph, x)
    want = []
    for pred, scores in zip(host.pred, host.scores):
        want += [f"class {int(pred)}", "scores " + " ".join(str(int(s)) for s in scores)]
    assert lines[1:-1] == want
    assert lines[-1] == "error: timeout after 10 of 99 bytes"


def test_license_file_matches_setup_and_the_generated_code_terms(graph):
    root = Path(__file__).resolve().parents[1]
    text = (root / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert re.search(r'license="MIT"', (root / "setup.py").read_text())
    assert "Generated code" in text and "under no conditions" in text
    readme = package_files(graph, "arduino", sample=default_sample(graph)[0])["README.md"]
    assert "MIT-licensed, with an exception for the code it generates" in readme
    assert "manifests declare no license" in readme
    for fmt in FORMATS:  # no manifest claims a license on the user's behalf
        files = package_files(graph, fmt, sample=default_sample(graph)[0])
        for name in ("library.properties", "library.json", "idf_component.yml"):
            assert "license" not in files.get(name, "").lower(), (fmt, name)
