#!/usr/bin/env bash
# The tests: sets everything up on a fresh machine, then runs lint, type checks and the suite.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh" dev,ocr,serve,ray
# PyTorch: 2.13.0 is the CPU build these machines install from a local file (any other spec
# would pull GBs of CUDA packages); the torch tests skip cleanly where it is absent.
"$root/.venv/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" \
  || echo "torch==2.13.0 could not be installed: the PyTorch tests will be skipped"
# Triton's perf_analyzer (the server tests drive it); the tool lives in ../shared/tools.
tools="$root/../shared/tools"
if [ -x "$tools/get-perf-analyzer.sh" ] || [ -f "$tools/get-perf-analyzer.sh" ]; then
  bash "$tools/get-perf-analyzer.sh" "$root/.venv/perf_analyzer" >/dev/null \
    || echo "perf_analyzer could not be installed: its tests will be skipped"
fi
# Triton Inference Server (CPU, Python backend): the Remote backend's tests call a real one.
if [ -f "$tools/get-triton.sh" ] && [ ! -x "$root/.venv/triton/bin/tritonserver" ]; then
  bash "$tools/get-triton.sh" "$root/.venv/triton" >/dev/null \
    || echo "tritonserver could not be installed: the Remote-against-Triton tests will be skipped"
fi
# Chromium: the status page's test opens it headless (Debian's package; we are root in CI).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: the status page's browser test will be skipped"
fi
cd "$root"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest "$@"
