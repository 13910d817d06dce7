#!/usr/bin/env bash
# Set up, then run the whole test suite (tests that need a toolchain or an
# emulator fail instead of skipping when CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
