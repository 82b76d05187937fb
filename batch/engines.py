"""Where batch jobs run: in this process, a local process pool, or Ray (one machine or many).

Each worker loads the codec once and keeps it; a worker codes one image at a time, so its memory
stays bounded by the largest image (itself bounded by ``--max-pixels``).
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from semcodec.batch.jobs import Job
from semcodec.errors import SemcodecError
from semcodec.fileio import sha256_file


class Worker:
    """Codes jobs with one :class:`~semcodec.codec.Codec` (model loaded once per worker)."""

    def __init__(self, weights: str | None = None, threads: int = 1):
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecations, not ours
        import torch

        from semcodec.codec import Codec

        torch.set_num_threads(threads)  # K workers on K cores, no oversubscription
        self.codec = Codec(weights)

    def run(self, job: Job, dst: str) -> dict:
        from semcodec import bitstream
        from semcodec.codec.image_io import MAX_PIXELS, encode_png, read_image
        from semcodec.codec.refine import RefineConfig
        from semcodec.codec.token_file import token_file_bytes
        from semcodec.fileio import clear_stale_parts, write_atomic

        start = time.perf_counter()
        record = {"source": job.source, "output": job.output, "mode": job.mode, "status": "failed", "error": None}
        try:
            self.codec.max_pixels = job.max_pixels or MAX_PIXELS
            data = Path(job.source).read_bytes()
            record.update(source_bytes=len(data), source_sha256=sha256_file(job.source))
            if job.mode == "encode":
                image = read_image(data, name=job.source, max_pixels=self.codec.max_pixels)
                refine = RefineConfig(steps=job.refine_steps)
                result = self.codec.encode(image, job.quality, job.token_space, job.keep_tokens, refine)
                out, pixels = result.data, result.height * result.width
                if result.warnings:
                    record["warnings"] = result.warnings
            else:
                header = bitstream.unpack(data)
                pixels = header.height * header.width
                if job.mode == "decode-pixels":
                    out = encode_png(self.codec.decode(data))
                else:
                    out = token_file_bytes(self.codec.decode_tokens(data), job.output, job.token_dtype)
            target = Path(dst) / job.output
            target.parent.mkdir(parents=True, exist_ok=True)
            clear_stale_parts(target)  # a killed run's half write of this output
            write_atomic(target, out, force=True)
            coded = len(out) if job.mode == "encode" else len(data)  # bpp is always the bitstream's
            record.update(status="ok", bytes=len(out), pixels=pixels, bpp=coded * 8 / pixels)
        except (SemcodecError, OSError, MemoryError) as exc:
            record["error"] = str(exc) or type(exc).__name__
        record["seconds"] = round(time.perf_counter() - start, 4)
        record["worker_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return record


_WORKER: Worker | None = None


def _init(weights: str | None) -> None:
    global _WORKER
    _WORKER = Worker(weights)


def _run(args: tuple[Job, str]) -> dict:
    assert _WORKER is not None
    return _WORKER.run(*args)


def local_engine(jobs: list[Job], dst: str, weights: str | None, workers: int) -> Iterator[dict]:
    """In-process for one worker; otherwise a spawned process pool, one model per process."""
    if not jobs:
        return
    if workers <= 1:
        worker = Worker(weights)
        for job in jobs:
            yield worker.run(job, dst)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init, initargs=(weights,)) as pool:
        yield from pool.imap_unordered(_run, [(job, dst) for job in jobs], chunksize=1)


def ray_engine(jobs: list[Job], dst: str, weights: str | None, workers: int) -> Iterator[dict]:
    """The same job on Ray: one actor per worker (model loaded once each), results as they finish.

    Joins a running cluster if ``RAY_ADDRESS`` is set, else starts a local one. On a cluster the
    destination must be a filesystem every node sees.
    """
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise SemcodecError("--engine ray needs Ray: pip install 'semcodec[ray]'") from None
    if not jobs:
        return
    if not ray.is_initialized():
        try:
            ray.init(
                num_cpus=None if _ray_address() else workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except Exception as exc:  # Ray raises bare Exception (e.g. a raylet that misses its 30 s start window)
            ray.shutdown()
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SemcodecError(
                f"Ray did not start ({message}); nothing was coded, rerun or use --engine local"
            ) from None
    remote_worker = ray.remote(num_cpus=1)(Worker)
    pool = ActorPool([remote_worker.remote(weights) for _ in range(max(1, workers))])
    yield from pool.map_unordered(lambda actor, job: actor.run.remote(job, dst), jobs)


def _ray_address() -> str | None:
    import os

    return os.environ.get("RAY_ADDRESS")


ENGINES = {"local": local_engine, "ray": ray_engine}
