"""Kodak rate-distortion of semcodec next to Pillow's JPEG/WebP/AVIF/JPEG 2000 and published curves.

One run on one machine: every image through every codec and setting; mean bpp / PSNR (RGB, per
image then averaged, as CompressAI reports) / MS-SSIM per point; BD-rate (PSNR) of semcodec
against each curve; an RD plot.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from semcodec.bench import classical
from semcodec.bench.bd import bd_rate
from semcodec.bench.metrics import msssim, psnr

PUBLISHED_FOR_BD = ("BPG 0.9.8 444 x265", "VTM", "bmshj2018-hyperprior (MSE, q1-8)")


def classical_curves(images: list[np.ndarray]) -> dict[str, list[dict]]:
    curves = {}
    for name, (encoder, sweep, _) in classical.available().items():
        points = []
        for setting in sweep:
            stats = []
            for pixels in tqdm(images, desc=f"{name} {setting}", unit="img", leave=False, dynamic_ncols=True):
                start = time.perf_counter()
                size, decoded = classical.round_trip(encoder, pixels, setting)
                seconds = time.perf_counter() - start
                stats.append(
                    (
                        size * 8 / (pixels.shape[0] * pixels.shape[1]),
                        psnr(decoded, pixels),
                        msssim(decoded, pixels),
                        seconds,
                    )
                )
            bpp, p, m, s = (float(np.mean(col)) for col in zip(*stats, strict=True))
            points.append({"setting": setting, "bpp": bpp, "psnr": p, "ms_ssim": m, "seconds": s})
        curves[name] = points
    return curves


def bd_table(test: list[dict], curves: dict[str, list[dict]]) -> dict[str, float]:
    rates, metric = [p["bpp"] for p in test], [p["psnr"] for p in test]
    return {
        name: bd_rate([p["bpp"] for p in pts], [p["psnr"] for p in pts], rates, metric) for name, pts in curves.items()
    }


def published(path: Path) -> dict[str, list[dict]]:
    curves = json.loads(path.read_text())["curves"]
    return {name: curves[name] for name in PUBLISHED_FOR_BD if name in curves}


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    for name, pts in curves.items():
        style = "-o" if name.startswith("semcodec") else ("--" if "published" in name else "-.")
        ax.plot(
            [p["bpp"] for p in pts],
            [p["psnr"] for p in pts],
            style,
            label=name,
            markersize=4,
            linewidth=2.5 if name.startswith("semcodec") else 1.2,
        )
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (RGB, dB)")
    ax.set_xlim(0, 2.0)
    ax.set_title("Kodak (24 images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_report(
    semcodec_curves: dict[str, list[dict]], curves: dict[str, list[dict]], bd: dict[str, dict[str, float]]
) -> str:
    """Markdown: every point of every curve, then BD-rate with one column per semcodec curve
    (``bd[semcodec curve][anchor]``)."""
    lines = ["| codec | setting | bpp | PSNR (dB) | MS-SSIM |", "|---|---:|---:|---:|---:|"]
    for name, pts in semcodec_curves.items():
        for p in pts:
            lines.append(f"| {name} | q{p['quality']} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")
    for name, pts in curves.items():
        for p in pts:
            lines.append(f"| {name} | {p.get('setting', '')} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")
    names = list(bd)
    lines += ["", f"| BD-rate (PSNR) against | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]
    for anchor in bd[names[0]]:
        cells = (bd[name][anchor] for name in names)
        lines.append(f"| {anchor} | {' | '.join('no overlap' if math.isnan(v) else f'{v:+.1f}%' for v in cells)} |")
    return "\n".join(lines)
