#!/usr/bin/env bash
# Installs the peers of benchmarks/serving.py into benchmarks/.peers/serving (gitignored), idempotently:
#   triton/   tritonserver 2.51 (CPU, Python backend) from nvidia-pytriton, by ../shared/tools/get-triton.sh
#   pa/       Triton's perf_analyzer 2.41.1, by ../shared/tools/get-perf-analyzer.sh
#   venv/     LitServe and Ray Serve, in a virtual environment of their own
# and checks for wrk (the Debian package; installed with apt-get when missing and run as root).
# pipeserve, the bare ASGI echo and the bare gRPC echo run from the project's .venv (scripts/setup.sh
# with the serve extra).
#
#   bash benchmarks/serving_peers.sh
#   SERVING_PEERS_FROM=/work/peers bash benchmarks/serving_peers.sh   # reuse installs already made there
#
# SERVING_PEERS_FROM=DIR links DIR/triton, DIR/pa and DIR/venv in place of a fresh install, each only
# when it is there and works; whatever is missing is installed as usual. TOOLS=DIR says where
# get-triton.sh and get-perf-analyzer.sh live (default: ../shared/tools beside the repository).
# SERVING_PEERS_DIR=DIR installs there instead (then pass --peers DIR to serving.py). PYTHON picks the
# interpreter for venv/ (default: python3). Versions are pinned so that figures compare across machines:
# LITSERVE_SPEC, RAY_SPEC override them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${SERVING_PEERS_DIR:-$root/benchmarks/.peers/serving}"
tools="${TOOLS:-$root/../shared/tools}"
from="${SERVING_PEERS_FROM:-}"
python="${PYTHON:-python3}"
litserve_spec="${LITSERVE_SPEC:-litserve==0.2.19}"
ray_spec="${RAY_SPEC:-ray[serve]==2.60.0}"
# benchmarks/.peers may be a symbolic link to a folder elsewhere (kept out of the tree); follow it,
# creating its target when it is gone, rather than replacing it.
peers="$root/benchmarks/.peers"
if [ -z "${SERVING_PEERS_DIR:-}" ] && [ -L "$peers" ] && [ ! -e "$peers" ]; then mkdir -p "$(readlink -f "$peers")"; fi
mkdir -p "$dest"

triton_ok() { [ -x "$1/bin/tritonserver" ] && [ -x "$1/venv/bin/python" ] && "$1/venv/bin/python" -c 'import numpy' 2>/dev/null; }
pa_ok() { [ -x "$1/bin/perf_analyzer" ] && "$1/bin/perf_analyzer" --version >/dev/null 2>&1; }
venv_ok() { [ -x "$1/bin/python" ] && "$1/bin/python" -c 'import litserve, ray.serve, zmq, uvloop' 2>/dev/null; }

# link NAME CHECK: use $from/NAME when it works and nothing usable is in $dest/NAME yet.
link() {
  local name=$1 check=$2
  if [ -n "$from" ] && ! "$check" "$dest/$name" && "$check" "$from/$name"; then
    rm -rf "${dest:?}/$name"
    ln -s "$(cd "$from/$name" && pwd)" "$dest/$name"
    echo "$name: linked to $from/$name"
  fi
}
link triton triton_ok
link pa pa_ok
link venv venv_ok

# tritonserver (the model repository's Python models run in triton/venv; numpy is all they need).
if triton_ok "$dest/triton"; then
  echo "triton: present ($dest/triton)"
else
  [ -f "$tools/get-triton.sh" ] || { echo "get-triton.sh not found in $tools (set TOOLS)" >&2; exit 1; }
  rm -rf "${dest:?}/triton"
  bash "$tools/get-triton.sh" "$dest/triton" numpy
fi

# perf_analyzer (its own script returns at once when it is already there).
if pa_ok "$dest/pa"; then
  echo "perf_analyzer: present ($dest/pa)"
else
  [ -f "$tools/get-perf-analyzer.sh" ] || { echo "get-perf-analyzer.sh not found in $tools (set TOOLS)" >&2; exit 1; }
  rm -rf "${dest:?}/pa"
  bash "$tools/get-perf-analyzer.sh" "$dest/pa" >/dev/null
  echo "perf_analyzer: installed ($dest/pa)"
fi

# LitServe and Ray Serve. protobuf<7 in the same install: ray[serve] alone would pull protobuf 7, which
# tritonclient's generated code (made by protoc 6.33.5) refuses, should anyone add it to this venv.
if venv_ok "$dest/venv"; then
  echo "venv: present ($dest/venv)"
else
  [ -L "$dest/venv" ] && rm -f "$dest/venv"
  [ -x "$dest/venv/bin/python" ] || "$python" -m venv "$dest/venv"
  "$dest/venv/bin/pip" install -q --disable-pip-version-check "$litserve_spec" "$ray_spec" "protobuf>=6.33.5,<7" \
    pyzmq uvloop httptools
  venv_ok "$dest/venv" || { echo "LitServe / Ray Serve did not install in $dest/venv" >&2; exit 1; }
  echo "venv: installed ($dest/venv)"
fi

# wrk, the HTTP load generator.
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null; }
  else
    echo "wrk is missing: install it (Debian/Ubuntu: sudo apt-get install wrk)" >&2
    exit 1
  fi
fi
echo "wrk: $(command -v wrk)"

"$dest/venv/bin/python" -c 'import importlib.metadata as m; print("litserve", m.version("litserve"), "| ray", m.version("ray"))'
echo "peers ready in $dest"
