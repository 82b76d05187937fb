"""Kodak rate-distortion and speed of semcodec at every quality level."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from semcodec.bench.datasets import image_paths
from semcodec.bench.metrics import msssim, psnr
from semcodec.bench.rd import bd_table
from semcodec.codec import Codec
from semcodec.codec.image_io import read_image
from semcodec.codec.refine import RefineConfig


def run(
    dataset: Path,
    weights: Path | None = None,
    limit: int | None = None,
    refine: RefineConfig | None = None,
    token_space: str | None = None,
) -> list[dict]:
    """One row per quality: means over the images; ``refine``: encoder latent refinement for each;
    ``token_space``: files for that token space (with its semantic layer, if the registry has one)."""
    codec = Codec(weights)
    paths = image_paths(dataset)[:limit]
    images = [read_image(p).pixels for p in paths]
    for q in codec.registry.qualities:  # load models before timing
        codec.model(codec.registry.quality(q).model)
    rows = []
    for q in sorted(codec.registry.qualities):
        per_image = []
        for pixels in tqdm(images, desc=f"semcodec q{q}", unit="img", leave=False, dynamic_ncols=True):
            start = time.perf_counter()
            result = codec.encode(pixels, q, token_space=token_space, refine=refine)
            enc = time.perf_counter() - start
            start = time.perf_counter()
            decoded, dec_stages = codec.decode_pixels(result.data)
            dec = time.perf_counter() - start
            per_image.append(
                dict(
                    bpp=result.bpp,
                    psnr=psnr(decoded, pixels),
                    ms_ssim=msssim(decoded, pixels),
                    enc_s=enc,
                    dec_s=dec,
                    **{f"enc_{k}_s": v for k, v in result.seconds.items()},
                    **{f"dec_{k}_s": v for k, v in dec_stages.items()},
                )
            )
        row = {"quality": q, "images": len(images)}
        row.update({k: float(np.mean([r[k] for r in per_image])) for k in per_image[0]})
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| quality | bpp | PSNR (dB) | MS-SSIM | encode s | decode s "
        "| enc transform / hyper / entropy s | dec transform / hyper / entropy s |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['quality']} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['ms_ssim']:.4f} | {r['enc_s']:.3f} | "
            f"{r['dec_s']:.3f} | {r['enc_transform_s']:.3f} / {r['enc_hyper_s']:.3f} / {r['enc_entropy_s']:.3f} | "
            f"{r['dec_transform_s']:.3f} / {r['dec_hyper_s']:.3f} / {r['dec_entropy_s']:.3f} |"
        )
    return "\n".join(lines)


def save(rows: list[dict], path: Path) -> None:
    path.write_text(json.dumps(rows, indent=1) + "\n")


def load_rd_run(path: Path, images: int) -> dict:
    """A saved ``bench rd`` JSON to weigh ``images`` images against, checked before minutes of coding.

    Raises ValueError (one line) for a file that is not such a run or measured another image count."""
    try:
        rd_run = json.loads(path.read_text())
        saved, classical = rd_run["semcodec"], rd_run["classical"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"not a bench rd JSON ({type(error).__name__}: {error})") from None
    if not saved or not isinstance(classical, dict):
        raise ValueError("not a bench rd JSON (no semcodec curve)")
    if saved[0].get("images") != images:
        raise ValueError(f"that rd run measured {saved[0].get('images')} images, this one {images}")
    return rd_run


def bd_against(rows: list[dict], rd_run: dict) -> dict[str, float]:
    """BD-rate (PSNR) of ``rows`` against every curve of an earlier ``bench rd`` run on the same images
    (:func:`load_rd_run`).

    The classical codecs are deterministic, so a candidate model is weighed against the anchors (and the
    model) of a saved run without re-running them: the quick check between a training run and the full
    ``bench rd`` of a release. The saved semcodec curve appears as ``semcodec (that run)``."""
    return bd_table(rows, {"semcodec (that run)": rd_run["semcodec"], **rd_run["classical"]})
