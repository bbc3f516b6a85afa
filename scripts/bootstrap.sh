#!/usr/bin/env bash
# Create .venv with ferry installed (editable). Shared by quickstart.sh and test.sh.
#   scripts/bootstrap.sh [EXTRAS]     e.g. "dev"
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

python=$(command -v python3 || true)
[[ -n $python ]] || { echo "bootstrap: python3 is required" >&2; exit 2; }
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "bootstrap: ferry needs Python >= 3.11 ($python is older)" >&2
    exit 2
fi
# Debian ships venv/ensurepip in a separate package.
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
fi
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [[ -n $extras ]]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
else
    .venv/bin/python -m pip install -q -e .
fi
