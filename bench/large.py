"""Large photos: wall time, peak RSS, bpp and PSNR of ``semcodec encode`` and ``decode`` at 1, 12, 50
and 100 MP, at the default quality (default files: the semantic layer included).

The images are mosaics of the Kodak photos at their own resolution (4:3, row-major, repeating), so
every part of a large image has a photo's detail, unlike one photo upscaled. Each command runs in a
fresh process (:func:`semcodec.bench.startup.run_command`: GNU time's peak RSS); ``PYTHONPATH``
may point the processes at another build (e.g. a worktree of an earlier commit) for a before/after.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from semcodec.bench.startup import run_command

SIZES_MP = (1, 12, 50, 100)


def mosaic(kodak: Path, megapixels: float) -> np.ndarray:
    """A 4:3 mosaic of ``megapixels`` from the Kodak photos (landscape ones; each 768 x 512)."""
    photos = []
    for path in sorted(kodak.glob("*.png")):
        with Image.open(path) as img:
            img = img.convert("RGB")
            photos.append(np.asarray(img if img.width > img.height else img.rotate(90, expand=True)))
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(megapixels * 1e6 / width)
    tile_h, tile_w = photos[0].shape[:2]
    out = np.empty((height, width, 3), dtype=np.uint8)
    index = 0
    for top in range(0, height, tile_h):
        for left in range(0, width, tile_w):
            photo = photos[index % len(photos)]
            index += 1
            rows, cols = min(tile_h, height - top), min(tile_w, width - left)
            out[top : top + rows, left : left + cols] = photo[:rows, :cols]
    return out


def psnr(a: Path, b: np.ndarray) -> float:
    with Image.open(a) as img:
        decoded = np.asarray(img.convert("RGB"))
    if decoded.shape != b.shape:
        return float("nan")
    se = 0.0
    for top in range(0, b.shape[0], 1024):  # in bands: two 100 MP images as float would take 5 GB
        diff = decoded[top : top + 1024].astype(np.float32) - b[top : top + 1024]
        se += float((diff * diff).sum())
    return 10 * np.log10(255.0**2 / (se / b.size))


def run(kodak: Path, sizes: tuple[float, ...] = SIZES_MP, extra: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for mp in sizes:
            pixels = mosaic(kodak, mp)
            image = folder / f"{mp:g}mp.png"
            Image.fromarray(pixels).save(image, compress_level=1)
            bits, out = folder / "big.smc", folder / "big.png"
            enc = run_command(["encode", str(image), str(bits), "--force", "--quiet", *extra])
            dec = run_command(["decode", str(bits), "-o", str(out), "--force", *extra]) if enc[2] == 0 else None
            row = {"mp": mp, "size": f"{pixels.shape[1]}x{pixels.shape[0]}", "encode": enc, "decode": dec}
            if dec is not None and dec[2] == 0:
                row["bpp"] = bits.stat().st_size * 8 / (pixels.shape[0] * pixels.shape[1])
                row["psnr"] = psnr(out, pixels)
            rows.append(row)
            for path in (image, bits, out):
                path.unlink(missing_ok=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| MP | size | encode s | encode peak MB | decode s | decode peak MB | bpp | PSNR dB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        es, em, ec = r["encode"]
        fail = lambda code: "" if code == 0 else f" (exit {code})"  # noqa: E731
        decode = (
            "| - | -" if r["decode"] is None else f"| {r['decode'][0]:.1f}{fail(r['decode'][2])} | {r['decode'][1]:.0f}"
        )
        quality = f"| {r['bpp']:.4f} | {r['psnr']:.2f} |" if "bpp" in r else "| - | - |"
        lines.append(f"| {r['mp']:g} | {r['size']} | {es:.1f}{fail(ec)} | {em:.0f} {decode} {quality}")
    return "\n".join(lines)
