#!/usr/bin/env bash
# Lint, type-check, run the unit tests and execute the notebooks on a tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
