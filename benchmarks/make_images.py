"""Writes the bundled benchmark images (deterministic): text on gradients, several sizes.

python benchmarks/make_images.py        # -> benchmarks/data/*.jpg
"""

from pathlib import Path

import cv2
import numpy as np

SIZES = [(480, 640), (720, 960), (600, 800), (360, 480), (1080, 720), (512, 512)]
LINES = ["pipeserve serves pipelines", "near the hardware's limit", "batching across requests", "one process, no RPC"]


def make(index: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    base = rng.uniform(60, 200, 3)[None, None, :]
    image = np.clip(base + 50 * x - 40 * y + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    for line, text in enumerate(LINES):
        scale = 0.6 + 0.3 * ((index + line) % 3)
        origin = (int(20 + 10 * line), int(60 + line * height / (len(LINES) + 1)))
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 2, cv2.LINE_AA)
    return image


def main() -> None:
    folder = Path(__file__).resolve().parent / "data"
    folder.mkdir(exist_ok=True)
    for index, (height, width) in enumerate(SIZES):
        cv2.imwrite(str(folder / f"sample{index}.jpg"), make(index, height, width), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {len(SIZES)} images to {folder}")


if __name__ == "__main__":
    main()
