#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: engines, venv, images, linters, pytest.
#   scripts/test.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

as_root scripts/engines.sh
scripts/bootstrap.sh dev
python3 scripts/build_images.py --engine both

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pytest"
# Engines are required here: a test that cannot reach Docker or Podman fails instead of skipping.
FERRY_REQUIRE_ENGINES=1 .venv/bin/pytest "$@"
