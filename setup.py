from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
for line in (ROOT / "ebnn_codegen" / "version.py").read_text().splitlines():
    if line.startswith("__version__"):
        exec(line, version)


def data_files(folder: str) -> list[str]:
    base = ROOT / folder
    return [str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()]


setup(
    name="ebnn-codegen",
    version=version["__version__"],
    description="Binarized neural networks from PyTorch to bit-exact, integer-only microcontroller C",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=[
        *find_packages(include=["ebnn_codegen", "ebnn_codegen.*"]),
        "ebnn_codegen.templates",
        "ebnn_codegen.firmware",
    ],
    package_dir={"ebnn_codegen.templates": "templates", "ebnn_codegen.firmware": "firmware"},
    package_data={
        "ebnn_codegen": ["py.typed"],
        "ebnn_codegen.templates": data_files("templates"),
        "ebnn_codegen.firmware": data_files("firmware"),
        "ebnn_codegen.boards": ["boards.json"],
    },
    install_requires=[
        "torch>=2.1,<=2.13.0",
        "numpy>=1.24",
        "jinja2>=3.1",
        "cffi>=1.15",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "hypothesis>=6",
            "scikit-learn>=1.3",
            "matplotlib>=3.7",
            "paho-mqtt>=2.0",
            "esptool>=5",
            "pyserial>=3.5",
        ],
        "boards": ["esptool>=5", "pyserial>=3.5"],
        "ddnn": ["matplotlib>=3.7"],
        "net": ["paho-mqtt>=2.0"],
        "lint": ["ruff>=0.4", "mypy>=1.8"],
        # ONNX / QONNX import and export (ebnn-gen import, verify --against, export --format qonnx);
        # brevitas and onnxscript only export the source models of the tests and docs examples.
        # torch stays at 2.13.0: install with scripts/setup.sh (a constraint pins it).
        "import": [
            "onnx>=1.16,<1.24",
            "onnxruntime>=1.18,<1.33",
            "qonnx>=0.4,<1.1",
            "onnxoptimizer>=0.3,<0.5",
            "brevitas>=0.13,<0.14",
            "onnxscript>=0.5,<0.8",
        ],
    },
    entry_points={"console_scripts": ["ebnn-gen=ebnn_codegen.cli:entry"]},
)
