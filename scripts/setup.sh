#!/usr/bin/env bash
# Creates .venv (if needed) and installs pipeserve into it with the extras named in $1
# (default: dev). Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-dev}"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
fi
"$root/.venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$root/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[$extras]"
