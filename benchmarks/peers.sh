#!/usr/bin/env bash
# Installs the peer systems the benchmarks compare against into benchmarks/.peers (a separate
# virtual environment, so that they never mix with pipeserve's): TorchPipe's C++ core, omniback.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.peers"
"$here/.peers/bin/pip" install -q --upgrade pip
"$here/.peers/bin/pip" install -q "omniback==0.2.24" numpy
echo "peers installed in $here/.peers"
