"""CompressAI's bmshj2018-hyperprior timed in the same process, as a speed reference.

Random initialisation is enough for timing: the architecture and the entropy coder set the cost.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F


def compressai_hyperprior(images: list[np.ndarray], quality: int = 3) -> dict[str, float]:
    from semcodec.compressai_parts import full_compressai

    full_compressai()  # the zoo needs all of it
    from compressai.zoo import bmshj2018_hyperprior

    torch.manual_seed(0)
    net = bmshj2018_hyperprior(quality=quality, pretrained=False).eval()
    net.update(force=True)
    totals = {"enc_s": 0.0, "dec_s": 0.0, "enc_transform_s": 0.0, "dec_transform_s": 0.0}
    with torch.inference_mode():
        for pixels in images:
            x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
            h, w = x.shape[2:]
            x = F.pad(x, (0, (-w) % 64, 0, (-h) % 64), mode="replicate")
            start = time.perf_counter()
            out = net.compress(x)
            totals["enc_s"] += time.perf_counter() - start
            start = time.perf_counter()
            net.decompress(out["strings"], out["shape"])
            totals["dec_s"] += time.perf_counter() - start
            start = time.perf_counter()
            y = net.g_a(x)
            totals["enc_transform_s"] += time.perf_counter() - start
            start = time.perf_counter()
            net.g_s(torch.round(y))
            totals["dec_transform_s"] += time.perf_counter() - start
    return {k: v / len(images) for k, v in totals.items()}


def speed_table(semcodec_rows: list[dict], reference: dict[str, float]) -> str:
    lines = [
        "| codec | encode s | decode s | enc transform / hyper / entropy s | dec transform / hyper / entropy s |",
        "|---|---:|---:|---|---|",
    ]
    for r in semcodec_rows:
        lines.append(
            f"| semcodec q{r['quality']} | {r['enc_s']:.3f} | {r['dec_s']:.3f} | {r['enc_transform_s']:.3f} / "
            f"{r['enc_hyper_s']:.3f} / {r['enc_entropy_s']:.3f} | {r['dec_transform_s']:.3f} / "
            f"{r['dec_hyper_s']:.3f} / {r['dec_entropy_s']:.3f} |"
        )
    lines.append(
        f"| CompressAI bmshj2018-hyperprior q3 (random init) | {reference['enc_s']:.3f} | {reference['dec_s']:.3f} | "
        f"g_a {reference['enc_transform_s']:.3f} | g_s {reference['dec_transform_s']:.3f} |"
    )
    return "\n".join(lines)
