"""Large photos: wall time and peak RSS of ``semcodec encode`` and ``decode`` at 1, 4, 12 and 25 MP.

The images are a Kodak photo resized (bicubic) to each size, 4:3, written once as PNG. Each command
runs in a fresh process (:func:`semcodec.bench.startup.run_command`: GNU time's peak RSS).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from semcodec.bench.startup import run_command

SIZES_MP = (1, 4, 12, 25)


def _image(source: Path, megapixels: float, folder: Path) -> Path:
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5) // 2 * 2
    height = int(megapixels * 1e6 / width)
    path = folder / f"{megapixels:g}mp.png"
    with Image.open(source) as img:
        img.convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(path, compress_level=1)
    return path


def run(source: Path, sizes: tuple[float, ...] = SIZES_MP, quality: int = 3) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for mp in sizes:
            image = _image(source, mp, folder)
            bits, out = folder / "big.smc", folder / "big.png"
            enc = run_command(["encode", str(image), str(bits), "-q", str(quality), "--force", "--quiet"])
            dec = run_command(["decode", str(bits), "-o", str(out), "--force"])
            with Image.open(image) as img:
                size = f"{img.width}x{img.height}"
            rows.append({"mp": mp, "size": size, "encode": enc, "decode": dec})
            image.unlink()
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| MP | size | encode s | encode peak MB | decode s | decode peak MB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        (es, em, ec), (ds, dm, dc) = r["encode"], r["decode"]
        fail = lambda code: "" if code == 0 else f" (exit {code})"  # noqa: E731
        lines.append(f"| {r['mp']:g} | {r['size']} | {es:.1f}{fail(ec)} | {em:.0f} | {ds:.1f}{fail(dc)} | {dm:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sizes = tuple(float(v) for v in sys.argv[2:]) or SIZES_MP
    print(table(run(Path(sys.argv[1]), sizes)))
