#!/usr/bin/env bash
# Before/after of a hot-path change, side by side: runs the overhead worker of the current tree
# against another commit's pipeserve, interleaved, in fresh processes.
#   bash benchmarks/compare_commits.sh OLD_COMMIT [repeats] [seconds]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
old="$1"; repeats="${2:-3}"; seconds="${3:-2}"
tree="$(mktemp -d)"
git -C "$root" worktree add -q --detach "$tree" "$old"
trap 'git -C "$root" worktree remove --force "$tree"' EXIT
for repeat in $(seq "$repeats"); do
  for threads in 1 8 64; do
    for system in pipeserve pipeserve-no-inline; do
      for side in old new; do
        src="$root/src"; [ "$side" = old ] && src="$tree/src"
        PYTHONPATH="$src:$root" "$root/.venv/bin/python" "$root/benchmarks/overhead.py" worker "$system" "$threads" "$seconds" |
          python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print('$side', '$system', $threads, d['throughput'], d['p99_ms'])"
      done
    done
  done
done
