"""Where the OCR pipeline's Python time goes: per stage, wall time and the GIL it holds, per page.

Each Python stage's batches are recorded during a one-client pass over the pages, then replayed
alone, twice: once by themselves, once beside a *probe* thread that counts in a Python loop. The
probe needs the GIL for every step; on two or more cores it runs at full speed while the stage
is in C code that released the GIL, and at half speed while the stage holds it (the interpreter
hands the GIL over every switch interval). So the fraction of the stage's time spent holding the
GIL is ``2 x (1 - probe rate beside the stage / probe rate alone)``. A stage that holds the GIL
for most of its time would gain from process instances (``instance_type = "process"``); one that
spends its time in OpenCV or NumPy releases it and gains nothing.

    python benchmarks/ocr_gil.py [--pages 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import document_pages, machine

PYTHON_STAGES = ("prepare", "boxes", "cls_pre", "rec_pre", "rec_post", "finish")


def record(pages: list[bytes]) -> dict[str, list[list[dict[str, Any]]]]:
    """Every batch each Python stage saw during a one-client pass, copied before it ran."""
    from pipeserve.examples import ocr

    seen: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in PYTHON_STAGES}
    with ocr.pipeline() as pipe:
        for name in PYTHON_STAGES:
            for instance in pipe._nodes[name].instances:  # white-box: wrap the stage's forward
                backend = instance.backend
                original = backend.forward

                def forward(items: list[dict[str, Any]], _name: str = name, _original: Any = original) -> None:
                    seen[_name].append(copy.deepcopy(items))
                    _original(items)

                backend.forward = forward  # type: ignore[method-assign]
        for page in pages:
            pipe({"data": page})
    return seen


def probe_rate(seconds: float, stop: threading.Event | None = None) -> float:
    """Python loop steps per second, for ``seconds`` or until ``stop``."""
    count = 0
    start = time.perf_counter()
    end = start + seconds
    while (stop is None or not stop.is_set()) and time.perf_counter() < end:
        for _ in range(200):
            count += 1
    return count / (time.perf_counter() - start)


def replay(name: str, batches: list[list[dict[str, Any]]], probe: bool) -> tuple[float, float]:
    """Seconds to run ``batches`` through a fresh instance of the stage ``name``, and (with
    ``probe``) the probe's rate meanwhile."""
    import pipeserve as ps
    from pipeserve.examples import ocr

    flat = {key: value for key, value in ocr.config()[name].items() if key not in ("next", "inputs", "outputs")}
    with ps.pipe({**flat, "instance_num": 1, "imports": "pipeserve.examples.ocr.stages"}) as pipe:
        backend = pipe._nodes["main"].instances[0].backend
        work = [copy.deepcopy(batch) for batch in batches]
        stop = threading.Event()
        rates: list[float] = []
        thread = threading.Thread(target=lambda: rates.append(probe_rate(120, stop)))
        if probe:
            thread.start()
        start = time.perf_counter()
        for batch in work:
            backend.forward(batch)
        seconds = time.perf_counter() - start
        if probe:
            stop.set()
            thread.join()
        return seconds, rates[0] if rates else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pages = document_pages(args.pages)
    seen = record(pages)
    alone = statistics.median(probe_rate(0.5) for _ in range(3))
    rows = []
    for name in PYTHON_STAGES:
        walls, fractions = [], []
        for _ in range(args.repeats):
            walls.append(replay(name, seen[name], probe=False)[0])
            before = probe_rate(0.3)  # the machine's speed drifts: the probe's own rate, next to it
            rate = replay(name, seen[name], probe=True)[1]
            reference = (before + probe_rate(0.3)) / 2
            fractions.append(min(1.0, max(0.0, 2 * (1 - rate / reference))))
        wall = statistics.median(walls) / len(pages)
        held = statistics.median(fractions)
        items = sum(len(batch) for batch in seen[name]) / len(pages)
        rows.append(
            {
                "stage": name,
                "items/page": round(items, 1),
                "wall ms/page": round(1e3 * wall, 1),
                "GIL held": f"{held:.0%}",
                "GIL ms/page": round(1e3 * wall * held, 1),
                "us/item": round(1e6 * wall / max(items, 1), 1),
            }
        )
    from pipeserve.bench import format_table

    print(machine())
    print(f"{len(pages)} held-out document pages; probe alone {alone / 1e6:.2f} M steps/s")
    print(format_table(rows))
    total = sum(r["GIL ms/page"] for r in rows)
    print(f"GIL held by the Python stages: {total:.0f} ms a page")


if __name__ == "__main__":
    main()
