"""pipeserve's OCR pipeline against RapidOCR on a large generated set: same texts, boxes within
2 pixels, line by line.

    python benchmarks/ocr_accuracy.py --pages 60                   # Hershey-font pages, edge cases
    python benchmarks/ocr_accuracy.py --pages 60 --documents 12    # and held-out generated documents

``--pages``: pages of printed lines (``samples.text_image``) and the edge cases; ``--documents``:
pages that look like real documents (``documents.benchmark_pages``: letters, prose, receipts,
tables, a turned line, mixed font sizes; 0.5 to 2 megapixels). One row per set and a total.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=60, help="generated pages of printed lines")
    parser.add_argument("--documents", type=int, default=0, help="held-out generated documents (0: none)")
    args = parser.parse_args()
    from rapidocr_onnxruntime import RapidOCR

    from pipeserve.bench import format_table
    from pipeserve.examples import ocr
    from pipeserve.examples.ocr.documents import benchmark_pages
    from pipeserve.examples.ocr.samples import compare, edge_cases, encode, from_rapidocr, text_image

    engine = RapidOCR()
    cases = [
        ("lines", f"page {seed}", encode(text_image(seed, upside_down=seed % 7 == 0)))
        for seed in range(1000, 1000 + args.pages)
    ]
    cases += [
        ("lines", name, encode(image, ".png" if name in ("tiny 1x1", "20000x20") else ".jpg"))
        for name, image in edge_cases().items()
    ]
    cases += [("documents", page.name, page.jpeg(90)) for page in benchmark_pages(args.documents)]
    sets = {kind: {"set": kind, "pages": 0, "lines": 0, "same_text": 0, "same_box": 0} for kind, _, _ in cases}
    differences = []
    with ocr.pipeline() as pipe:
        futures = [(kind, name, data, pipe.submit({"data": data})) for kind, name, data in cases]
        for kind, name, data, future in futures:
            totals = sets[kind]
            try:
                ours = future.result(timeout=600)["result"]
            except Exception as exc:  # noqa: BLE001 - compared with RapidOCR's own failure below
                ours = exc
            try:
                theirs = from_rapidocr(engine(data))
            except Exception as exc:  # noqa: BLE001
                theirs = exc
            totals["pages"] += 1
            if isinstance(ours, Exception) or isinstance(theirs, Exception):
                agree = isinstance(ours, Exception) and isinstance(theirs, Exception)
                verdict = "agree" if agree else "DIFFER"
                print(f"{name}: ours {type(ours).__name__}, theirs {type(theirs).__name__}: {verdict}")
                continue
            counts = compare(ours, theirs)
            if len(ours) != len(theirs):
                print(f"{name}: {len(ours)} lines, RapidOCR {len(theirs)}: DIFFER")
            for key in ("lines", "same_text", "same_box"):
                totals[key] += counts[key]
            for mine, other in zip(ours, theirs, strict=False):
                if mine["text"] != other["text"]:
                    differences.append((name, mine["text"], other["text"]))
    print(machine())
    rows = list(sets.values())
    if len(rows) > 1:
        keys = ("pages", "lines", "same_text", "same_box")
        rows.append({"set": "all", **{key: sum(row[key] for row in rows) for key in keys}})
    for row in rows:
        row["text %"] = f"{100 * row['same_text'] / max(1, row['lines']):.2f}"
        row["box %"] = f"{100 * row['same_box'] / max(1, row['lines']):.2f}"
    print(format_table(rows))
    print(f"lines whose text differs: {len(differences)}" + (" (the first 20 below)" if len(differences) > 20 else ""))
    for name, mine, other in differences[:20]:
        print(f"  {name}: ours {mine!r} | RapidOCR {other!r}")


if __name__ == "__main__":
    main()
