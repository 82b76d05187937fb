"""Batch throughput: images/s on Kodak x N copies for 1 and 2 local workers and Ray, peak memory."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from semcodec.batch.engines import ENGINES
from semcodec.batch.jobs import plan_jobs, run_batch
from semcodec.bench.datasets import image_paths


def run(dataset: Path, copies: int, configs: list[tuple[str, int]], quality: int | None = None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for c in range(copies):
            (src / f"copy{c}").mkdir(parents=True)
            for image in image_paths(dataset):
                (src / f"copy{c}" / image.name).symlink_to(image.resolve())
        jobs = plan_jobs(str(src), "encode", quality)
        for engine, workers in configs:
            dst = Path(tmp) / f"out-{engine}-{workers}"
            start = time.perf_counter()
            summary, failures = run_batch(jobs, dst, ENGINES[engine], workers, progress=False)
            seconds = time.perf_counter() - start
            from semcodec.batch.jobs import Manifest

            rss = max(e.get("worker_peak_rss_mb", 0) for e in Manifest(dst).entries.values())
            rows.append(
                {
                    "engine": engine,
                    "workers": workers,
                    "images": summary.done,
                    "failed": summary.failed,
                    "seconds": seconds,
                    "images_per_s": summary.done / seconds,
                    "peak_worker_rss_mb": rss,
                }
            )
            shutil.rmtree(dst)
    base = next((r["images_per_s"] for r in rows if r["engine"] == "local" and r["workers"] == 1), None)
    for r in rows:
        r["speedup"] = r["images_per_s"] / base if base else float("nan")
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| engine | workers | images | seconds (incl. start-up) | images/s | vs 1 local worker | peak RSS per worker |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['workers']} | {r['images']} | {r['seconds']:.1f} | "
            f"{r['images_per_s']:.2f} | {r['speedup']:.2f}x | {r['peak_worker_rss_mb']:.0f} MB |"
        )
    return "\n".join(lines)
