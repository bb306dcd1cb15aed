#!/usr/bin/env bash
# The main job: sets everything up on a fresh machine, then runs `pipeserve demo`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh" dev,ocr
exec "$root/.venv/bin/pipeserve" demo "$@"
