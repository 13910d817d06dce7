#!/usr/bin/env bash
# Set up, then run the main job on the shipped model: export the C, verify it
# bit-exactly against PyTorch (random inputs, then the MNIST test images when
# available), and print the per-block report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=${1:-examples/models/mnist_small.pt}
OUT=${2:-out/$(basename "$MODEL" .pt)}
set -x
.venv/bin/ebnn-gen export "$MODEL" -o "$OUT"
.venv/bin/ebnn-gen verify "$MODEL" --samples 256
.venv/bin/ebnn-gen report "$MODEL"
