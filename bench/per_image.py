"""Which images semcodec wins or loses: PSNR against a classical codec given at most the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from semcodec.bench.classical import EQUAL_BYTES, at_most_bytes
from semcodec.bench.datasets import image_paths
from semcodec.bench.metrics import psnr
from semcodec.codec import Codec
from semcodec.codec.image_io import read_image


def run(
    dataset: Path, qualities: list[int], against: str = "AVIF", weights: Path | None = None, shrink: int = 1
) -> list[dict]:
    """Per image and quality: semcodec's bpp and its PSNR gain (dB) over ``against`` (a
    :data:`~semcodec.bench.classical.EQUAL_BYTES` codec, speed 6 for AVIF) at the highest setting whose
    file is no larger than semcodec's, or at its smallest file where none is (then it had more bytes:
    both sizes are recorded and the table marks the row). ``shrink``: each image downscaled by that
    factor first (PIL bicubic), to see whether a loss sits in the finest detail."""
    codec, encoder = Codec(weights), EQUAL_BYTES[against]
    rows = []
    for path in tqdm(image_paths(dataset), desc="per image", unit="img", dynamic_ncols=True):
        pixels = shrunk(read_image(path).pixels, shrink)
        row: dict = {"image": path.name, "megapixels": pixels.shape[0] * pixels.shape[1] / 1e6}
        for q in qualities:
            data = codec.encode(pixels, q).data
            size, theirs = at_most_bytes(encoder, pixels, len(data))
            row[f"q{q}_bytes"], row[f"q{q}_{against}_bytes"] = len(data), size
            row[f"q{q}_bpp"] = 8 * len(data) / (pixels.shape[0] * pixels.shape[1])
            row[f"q{q}_gain_db"] = psnr(codec.decode(data), pixels) - psnr(theirs, pixels)
        rows.append(row)
    return rows


def shrunk(pixels: np.ndarray, factor: int) -> np.ndarray:
    """``pixels`` downscaled by ``factor`` (bicubic, antialiased); ``factor`` 1: as they are."""
    if factor == 1:
        return pixels
    from PIL import Image

    image = Image.fromarray(pixels)
    size = (max(1, image.width // factor), max(1, image.height // factor))
    return np.array(image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))


def table(rows: list[dict], qualities: list[int], against: str) -> str:
    head = " | ".join(f"q{q} bpp | q{q} dB vs {against}" for q in qualities)
    lines = [f"| image | {head} |", "|---|" + "---:|" * 2 * len(qualities)]
    for r in sorted(rows, key=lambda r: r[f"q{qualities[-1]}_gain_db"]):
        cells = " | ".join(f"{r[f'q{q}_bpp']:.3f} | {r[f'q{q}_gain_db']:+.2f}{_more(r, q, against)}" for q in qualities)
        lines.append(f"| {r['image']} | {cells} |")
    means = " | ".join(
        f"{np.mean([r[f'q{q}_bpp'] for r in rows]):.3f} | {np.mean([r[f'q{q}_gain_db'] for r in rows]):+.2f}"
        for q in qualities
    )
    lines.append(f"| mean of {len(rows)} | {means} |")
    if any(_more(r, q, against) for r in rows for q in qualities):
        lines.append(f"\n\\* {against}'s smallest file was larger than semcodec's")
    return "\n".join(lines)


def _more(row: dict, quality: int, against: str) -> str:
    """``*`` where the classical codec's file was larger than semcodec's (it had no smaller one)."""
    return "*" if row[f"q{quality}_{against}_bytes"] > row[f"q{quality}_bytes"] else ""
