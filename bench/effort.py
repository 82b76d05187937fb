"""Encoder effort on Kodak: what each ``--effort`` level buys (BD-rate against effort 0) and costs."""

from __future__ import annotations

from pathlib import Path

from semcodec.bench import kodak
from semcodec.bench.bd import bd_rate
from semcodec.codec.refine import RefineConfig


def run(dataset: Path, efforts: list[int], weights: Path | None = None, limit: int | None = None) -> list[dict]:
    """One row per effort: the per-quality points, mean encode and decode seconds per image, and
    the BD-rate (PSNR) against effort 0 on the same images in the same run."""
    rows = []
    for effort in sorted({0, *efforts}):
        refine = RefineConfig.for_effort(effort)
        points = kodak.run(dataset, weights, limit, refine)
        rows.append({"effort": effort, "refine_steps": refine.steps, "points": points})
    base = rows[0]["points"]
    for row in rows:
        pts = row["points"]
        row["bd_rate"] = bd_rate(
            [p["bpp"] for p in base], [p["psnr"] for p in base], [p["bpp"] for p in pts], [p["psnr"] for p in pts]
        )
        row["encode_s"] = sum(p["enc_s"] for p in pts) / len(pts)
        row["decode_s"] = sum(p["dec_s"] for p in pts) / len(pts)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| effort | refine steps | bpp per quality | PSNR (dB) per quality | BD-rate vs effort 0 "
        "| encode s/img | decode s/img |",
        "|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        bpp = " / ".join(f"{p['bpp']:.4f}" for p in r["points"])
        db = " / ".join(f"{p['psnr']:.2f}" for p in r["points"])
        lines.append(
            f"| {r['effort']} | {r['refine_steps']} | {bpp} | {db} | {r['bd_rate']:+.2f}% | "
            f"{r['encode_s']:.2f} | {r['decode_s']:.3f} |"
        )
    return "\n".join(lines)
