#!/usr/bin/env bash
# Set up, then check the code (ruff lint and format, mypy with the scope in pyproject.toml)
# and run the whole test suite (tests that need a toolchain or an emulator fail instead of
# skipping when CI=true).  Arguments go to pytest, e.g. `scripts/test.sh -m quick`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff check" >&2
.venv/bin/ruff check .
echo "[test] ruff format --check" >&2
.venv/bin/ruff format --check .
echo "[test] mypy (scope: pyproject.toml)" >&2
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
