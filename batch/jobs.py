"""Plan a batch (source files -> mirrored outputs), run it, and keep a resumable manifest.

The manifest (``manifest.jsonl`` in the destination) gets one line per finished item, appended
and fsynced after the item's output was atomically renamed into place. A rerun skips every item
whose last line is ``ok`` for a source with the same sha256, made with the same settings (mode,
quality, kept tokens, token space, refinement steps, and the weights registry they ran with), and
whose output still exists with the recorded size; everything else is (re)done, so a rerun with new
settings or new weights recodes what the old ones made instead of counting it as done. A run
killed at any moment therefore loses nothing and leaves no half-written output (a torn last
manifest line is ignored).
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from semcodec.codec.defaults import DEFAULT_REFINE_STEPS, DEFAULT_TOKEN_DTYPE
from semcodec.errors import SemcodecError
from semcodec.fileio import sha256_file

BITSTREAM_SUFFIX = ".smc"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif", ".ppm", ".pgm"}
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Job:
    """One item: what to read, where its result goes (relative to the destination), how."""

    source: str
    output: str
    mode: str  # "encode" | "decode-pixels" | "decode-tokens"
    quality: int | None = None
    keep_tokens: int | None = None
    token_space: str | None = None
    refine_steps: int = DEFAULT_REFINE_STEPS
    token_dtype: str = DEFAULT_TOKEN_DTYPE
    max_pixels: int | None = None  # the largest image (or file's image) coded; None: the codec's default

    def settings(self) -> dict:
        """What decides the output besides the source's bytes (and the weights: see :func:`run_batch`)."""
        return {
            "mode": self.mode,
            "quality": self.quality,
            "keep_tokens": self.keep_tokens,
            "token_space": self.token_space,
            "refine_steps": self.refine_steps,
            **({"token_dtype": self.token_dtype} if self.mode == "decode-tokens" else {}),
        }


def weights_digest(weights: str | None) -> str:
    """sha256 of the registry a batch codes with: it names every weights file by its own sha256."""
    from semcodec.weights import REGISTRY_FILE, WEIGHTS_DIR

    root = Path(weights) if weights is not None else WEIGHTS_DIR
    try:
        return sha256_file(root / REGISTRY_FILE)
    except OSError:
        return "missing"  # the codec's own load reports the missing registry with a clear error


def list_sources(src: str, suffixes: set[str]) -> list[tuple[Path, Path]]:
    """``(absolute path, path relative to the source root)`` for a folder, a glob or a list file."""
    path = Path(src)
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes]
        return sorted((p, p.relative_to(path)) for p in found)
    if path.is_file() and path.suffix.lower() in {".txt", ".lst", ".list"}:
        base = path.parent
        entries = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        pairs = []
        for entry in entries:
            p = Path(entry) if Path(entry).is_absolute() else base / entry
            pairs.append((p, Path(entry) if not Path(entry).is_absolute() else Path(p.name)))
        return pairs
    matches = sorted(Path(m) for m in glob.glob(src, recursive=True) if Path(m).is_file())
    if matches:
        root = Path(os.path.commonpath([str(m.parent) for m in matches]))
        return [(m, m.relative_to(root)) for m in matches]
    raise SemcodecError(f"no input found at {src!r} (a folder, a glob or a .txt list of paths)")


def plan_jobs(
    src: str,
    mode: str,
    quality: int | None = None,
    keep_tokens: int | None = None,
    token_space: str | None = None,
    refine_steps: int = DEFAULT_REFINE_STEPS,
    token_dtype: str = DEFAULT_TOKEN_DTYPE,
    max_pixels: int | None = None,
) -> list[Job]:
    if mode == "encode":
        pairs = list_sources(src, IMAGE_SUFFIXES)
        settings = (quality, keep_tokens, token_space, refine_steps)
        jobs = [Job(str(p), str(rel) + BITSTREAM_SUFFIX, mode, *settings, max_pixels=max_pixels) for p, rel in pairs]
    else:
        suffix = ".png" if mode == "decode-pixels" else ".safetensors"
        pairs = list_sources(src, {BITSTREAM_SUFFIX, ".bin"})
        jobs = [
            Job(str(p), str(_strip(rel).with_suffix(suffix)), mode, token_dtype=token_dtype, max_pixels=max_pixels)
            for p, rel in pairs
        ]
    seen: dict[str, str] = {}
    for job in jobs:
        if job.output in seen:
            raise SemcodecError(f"{job.source} and {seen[job.output]} would both write {job.output}")
        seen[job.output] = job.source
    return jobs


def _strip(rel: Path) -> Path:
    return rel.with_suffix("") if rel.suffix in {BITSTREAM_SUFFIX, ".bin"} else rel


class Manifest:
    """Append-only JSONL record of finished items; the last line per source wins."""

    def __init__(self, dst: Path):
        self.path = dst / MANIFEST
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill mid-write
                self.entries[entry["source"]] = entry

    def is_done(self, job: Job, dst: Path, settings: dict) -> bool:
        entry = self.entries.get(job.source)
        if not entry or entry.get("status") != "ok" or entry.get("output") != job.output:
            return False
        if self.settings_changed(job, settings):
            return False
        out = dst / job.output
        try:
            return out.stat().st_size == entry["bytes"] and sha256_file(job.source) == entry["source_sha256"]
        except OSError:
            return False

    def settings_changed(self, job: Job, settings: dict) -> bool:
        """The source was coded fine before, but with other settings or weights: a rerun recodes it."""
        entry = self.entries.get(job.source)
        return bool(entry) and entry.get("status") == "ok" and entry.get("settings") != settings

    def append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[entry["source"]] = entry


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    changed_settings: int = 0  # done before, but with other settings or weights: recoded
    source_bytes: int = 0
    output_bytes: int = 0
    pixels: int = 0
    seconds: float = 0.0

    @property
    def mean_bpp(self) -> float | None:
        """Bits per pixel of the files written (encode); ``None`` when nothing was coded."""
        return self.output_bytes * 8 / self.pixels if self.pixels else None


Engine = Callable[[list[Job], str, str | None, int], Iterator[dict]]
"""(jobs, destination, weights dir, workers) -> one record per job, in completion order."""


class LogProgress:
    """Progress for a log file (stderr not a terminal): a plain line every tenth of the work or minute."""

    def __init__(self, total: int, every_s: float = 60.0):
        self.total, self.done, self.every_s = total, 0, every_s
        self.step = max(1, total // 10)
        self.last = time.time()
        self.postfix: dict[str, object] = {}

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.time()
        if self.done % self.step == 0 or self.done == self.total or now - self.last >= self.every_s:
            extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
            print(f"batch: {self.done}/{self.total} done{extra}", file=sys.stderr, flush=True)
            self.last = now

    def set_postfix(self, **values: object) -> None:
        self.postfix = values

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool):
    """tqdm on a terminal, :class:`LogProgress` lines otherwise, nothing when disabled or idle."""
    from tqdm import tqdm

    if not enabled or total == 0:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, unit="img", dynamic_ncols=True)
    return LogProgress(total)


def run_batch(
    jobs: list[Job],
    dst: Path,
    engine: Engine,
    workers: int,
    weights: str | None = None,
    progress: bool = True,
) -> tuple[Summary, list[dict]]:
    """Run the jobs not already done; append a manifest line per result; return the summary."""
    dst.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(dst)
    digest = weights_digest(weights)
    settings = {job.source: {**job.settings(), "weights_registry_sha256": digest} for job in jobs}
    todo = [job for job in jobs if not manifest.is_done(job, dst, settings[job.source])]
    changed = sum(manifest.settings_changed(job, settings[job.source]) for job in todo)
    summary = Summary(skipped=len(jobs) - len(todo), changed_settings=changed)
    failures = []
    start = time.time()
    bar = progress_bar(len(todo), progress)
    encoding = bool(jobs) and jobs[0].mode == "encode"
    for record in engine(todo, str(dst), weights, workers):
        record["settings"] = settings[record["source"]]
        manifest.append(record)
        if record["status"] == "ok":
            summary.done += 1
            summary.source_bytes += record["source_bytes"]
            summary.output_bytes += record["bytes"]
            summary.pixels += record.get("pixels") or 0
        else:
            summary.failed += 1
            failures.append(record)
        bar.update(1)
        if encoding:
            bar.set_postfix(saved=f"{(summary.source_bytes - summary.output_bytes) / 1e6:.1f}MB", failed=summary.failed)
        else:
            bar.set_postfix(written=f"{summary.output_bytes / 1e6:.1f}MB", failed=summary.failed)
    bar.close()
    summary.seconds = time.time() - start
    return summary, failures
