"""pipeserve's OCR pipeline against RapidOCR on a large generated set: same texts, boxes within
2 pixels, line by line.

    python benchmarks/ocr_accuracy.py --pages 60
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=60)
    args = parser.parse_args()
    from rapidocr_onnxruntime import RapidOCR

    from pipeserve.bench import format_table
    from pipeserve.examples import ocr
    from pipeserve.examples.ocr.samples import compare, edge_cases, encode, from_rapidocr, text_image

    engine = RapidOCR()
    cases = [(f"page {seed}", text_image(seed, upside_down=seed % 7 == 0)) for seed in range(1000, 1000 + args.pages)]
    cases += list(edge_cases().items())
    totals = {"pages": 0, "lines": 0, "same_text": 0, "same_box": 0}
    differences = []
    with ocr.pipeline() as pipe:
        futures = []
        for name, image in cases:
            data = encode(image, ".png" if name in ("tiny 1x1", "20000x20") else ".jpg")
            futures.append((name, data, pipe.submit({"data": data})))
        for name, data, future in futures:
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
            for key in ("lines", "same_text", "same_box"):
                totals[key] += counts[key]
            for mine, other in zip(ours, theirs, strict=False):
                if mine["text"] != other["text"]:
                    differences.append((name, mine["text"], other["text"]))
    print(machine())
    totals["text %"] = round(100 * totals["same_text"] / max(1, totals["lines"]), 2)
    totals["box %"] = round(100 * totals["same_box"] / max(1, totals["lines"]), 2)
    print(format_table([totals]))
    for name, mine, other in differences[:20]:
        print(f"  {name}: ours {mine!r} | RapidOCR {other!r}")


if __name__ == "__main__":
    main()
