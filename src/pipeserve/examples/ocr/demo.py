"""The main job: the OCR service on the bundled pages, with concurrent clients.

Prints the recognised text of the first page and writes that page annotated (boxes and texts, see
:mod:`.annotate`), then throughput and latency percentiles for 1, 4 and 16 closed-loop clients
(the load generator of :mod:`pipeserve.bench`), each row with the requests and seconds it rests
on, and how the lines batched.

Each row measures a fixed count of requests, 2 x clients + 8 (10, 16 and 40), all clients
together, from the first sent to the last done: on two cores a page takes about a second, so a
short window would rest on a handful of completions. ``seconds`` measures fixed windows instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from ...bench import format_table, run_closed_loop
from . import pipeline

IMAGES = Path(__file__).with_name("images")
ANNOTATED = Path(".artifacts") / "ocr-annotated.png"


def requests_for(clients: int) -> int:
    """How many requests a row with ``clients`` clients measures: every client several, and
    enough in all that the ramp at the start and the drain at the end weigh little."""
    return 2 * clients + 8


def main(
    seconds: float | None = None,
    clients: tuple[int, ...] = (1, 4, 16),
    out: TextIO = sys.stdout,
    *,
    annotated: str | Path | None = ANNOTATED,
) -> None:
    """Run the demo; ``seconds`` measures each row for that long instead of a fixed count;
    ``annotated`` is where the annotated first page goes (None: not written)."""
    paths = sorted(IMAGES.glob("*.jpg"))
    pages = [path.read_bytes() for path in paths]
    out.write(f"PP-OCR as a pipeserve pipeline: {len(pages)} bundled pages, models from rapidocr-onnxruntime\n\n")
    with pipeline() as pipe:
        first = pipe({"data": pages[0]})["result"]  # also warms every model up
        out.write(f"{paths[0].name}: {len(first)} lines\n")
        for line in first:
            corner = [round(v) for v in line["box"][0]]
            out.write(f"  {line['score']:.3f}  at {corner}  {line['text']}\n")
        if annotated is not None:
            out.write(f"\nannotated page written to {_write_annotated(pages[0], first, Path(annotated))}\n")
        out.write("\n")
        if seconds is None:
            out.write(f"Each row: {', '.join(f'{requests_for(c)} requests' for c in clients)} in turn")
        else:
            out.write(f"Each row: {seconds:g} s after a 2 s warm-up")
        out.write(f"; the clients send the {len(pages)} pages in turn, each its next as the last returns.\n")
        rows = []
        for count in clients:
            result = run_closed_loop(
                pipe,
                lambda i: {"data": pages[i % len(pages)]},
                clients=count,
                seconds=seconds or 0.0,
                requests=None if seconds else requests_for(count),
                warmup=2.0 if seconds else 0.0,  # a fixed count follows the first page: warm already
                label=f"{count} clients",
                progress=out,
            )
            summary = result.summary()
            rows.append(
                {
                    "clients": count,
                    "requests": summary["requests"],
                    "seconds": float(result.seconds),
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
    out.write("How the models batched (lines of different requests share cls batches; rec reads a line a call):\n")
    out.write(format_table(batching) + "\n")


def _write_annotated(page: bytes, lines: list[dict[str, Any]], path: Path) -> Path:
    from PIL import Image

    from .annotate import annotate

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(annotate(page, lines)).save(path)
    return path
