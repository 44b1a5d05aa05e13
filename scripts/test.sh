#!/usr/bin/env bash
# The test command: install what is needed, lint, then run the whole suite (CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests bench scripts
ruff format --check src tests bench scripts
python -m pytest -q "$@"
