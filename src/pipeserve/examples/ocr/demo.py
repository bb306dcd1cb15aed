"""The main job: the OCR service on the bundled pages, with concurrent clients.

Prints the recognised text of one page, then throughput and latency percentiles for 1, 4 and 16
closed-loop clients (the load generator of :mod:`pipeserve.bench`), and how the lines batched.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ...bench import format_table, run_closed_loop
from . import pipeline

IMAGES = Path(__file__).with_name("images")


def main(seconds: float = 10.0, clients: tuple[int, ...] = (1, 4, 16), out: TextIO = sys.stdout) -> None:
    pages = [path.read_bytes() for path in sorted(IMAGES.glob("*.jpg"))]
    out.write(f"PP-OCR as a pipeserve pipeline: {len(pages)} bundled pages, models from rapidocr-onnxruntime\n\n")
    with pipeline() as pipe:
        first = pipe({"data": pages[0]})["result"]
        out.write(f"{sorted(IMAGES.glob('*.jpg'))[0].name}: {len(first)} lines\n")
        for line in first:
            corner = [round(v) for v in line["box"][0]]
            out.write(f"  {line['score']:.3f}  at {corner}  {line['text']}\n")
        out.write("\n")
        rows = []
        for count in clients:
            result = run_closed_loop(
                pipe,
                lambda i: {"data": pages[i % len(pages)]},
                clients=count,
                seconds=seconds,
                warmup=2.0,
                progress=out,
            )
            summary = result.summary()
            rows.append(
                {
                    "clients": count,
                    "images/s": summary["throughput"],
                    "p50 ms": summary["p50_ms"],
                    "p90 ms": summary["p90_ms"],
                    "p99 ms": summary["p99_ms"],
                    "errors": summary["errors"],
                }
            )
        stats = pipe.stats()
    out.write(format_table(rows) + "\n\n")
    batching = [
        {
            "node": node,
            "items": stats[node]["items"],
            "batches": stats[node]["batches"],
            "mean batch": stats[node]["mean_batch_size"],
            "mean compute ms": stats[node]["mean_compute_ms"],
        }
        for node in ("det", "cls", "rec")
    ]
    out.write("How the models batched (text lines of different requests share cls and rec batches):\n")
    out.write(format_table(batching) + "\n")
