"""Before/after of a change, side by side: the same benchmark workers against two source trees.

Each round runs every scenario once per side in fresh processes, the sides interleaved (and which
side goes first alternating between rounds), so drift on a shared machine hits both alike. The
report gives, per scenario, each side's median and the median of the per-round ratios
(after / before) with their min-max.

Scenarios: ``noop-1`` and ``noop-8`` (requests/s of a no-op ``Identity`` node, 2 instances, 1 and 8
closed-loop caller threads, benchmarks/overhead.py) and ``saturation`` (items/s of the numpy MLP
at 64 clients as a fraction of the ideal, benchmarks/scheduler.py).

    python benchmarks/compare.py d6b040b --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine

SCENARIOS: dict[str, tuple[str, list[str], dict[str, str], str]] = {
    # name: (script, worker args, extra environment, figure compared)
    "noop-1": ("overhead.py", ["pipeserve", "1"], {}, "throughput"),
    "noop-8": ("overhead.py", ["pipeserve", "8"], {}, "throughput"),
    "saturation": (
        "scheduler.py",
        ["saturation", "64"],
        {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        "fraction",
    ),
}


def run(src: Path, scenario: str, seconds: float) -> float:
    script, args, env, figure = SCENARIOS[scenario]
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "worker", *args, str(seconds)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{scenario} on {src} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result[figure])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="the commit to compare the working tree against")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    from pipeserve.bench import format_table

    scenarios = args.scenarios.split(",")
    with tempfile.TemporaryDirectory() as tree:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", tree, args.before], check=True)
        try:
            sides = {"before": Path(tree) / "src", "after": ROOT / "src"}
            figures: dict[tuple[str, str], list[float]] = {}
            for round_ in range(args.rounds):
                order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
                for scenario in scenarios:
                    for side in order:
                        value = run(sides[side], scenario, args.seconds)
                        figures.setdefault((scenario, side), []).append(value)
                        print(f"round {round_ + 1}: {scenario:>10} {side:>6} {value:,.3f}", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree], check=False)
    rows = []
    for scenario in scenarios:
        before, after = figures[(scenario, "before")], figures[(scenario, "after")]
        ratios = [a / b for a, b in zip(after, before, strict=True)]
        rows.append(
            {
                "scenario": scenario,
                "figure": SCENARIOS[scenario][3],
                "before (median)": statistics.median(before),
                "after (median)": statistics.median(after),
                "ratio (median)": statistics.median(ratios),
                "ratio min": min(ratios),
                "ratio max": max(ratios),
            }
        )
    print(machine())
    print(f"before = {args.before}, after = working tree, {args.rounds} interleaved rounds of {args.seconds} s")
    print(format_table(rows))


if __name__ == "__main__":
    main()
