"""``semcodec batch encode`` and ``batch decode``: whole folders, in parallel, resumable."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from semcodec.cli.app import _effort, _max_pixels, _refine_steps, _registry, _token_dtype, main, refinement_steps


@main.group()
def batch() -> None:
    """Code whole datasets: parallel, resumable (manifest.jsonl in DST), with progress."""


def _run_batch(ctx: click.Context, jobs, dst: Path, workers: int, engine: str, verb: str) -> None:
    from semcodec.batch.engines import ENGINES
    from semcodec.batch.jobs import run_batch

    summary, failures = run_batch(jobs, dst, ENGINES[engine], workers, _weights_str(ctx))
    if summary.done == summary.failed == 0:
        click.echo(f"nothing to do: {summary.skipped} files already {verb} with these settings", err=True)
        return
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    bpp = summary.mean_bpp
    click.echo(
        f"{verb} {summary.done} files ({summary.skipped} already done, {summary.failed} failed"
        + (f", {summary.changed_settings} recoded for changed settings" if summary.changed_settings else "")
        + ") in "
        f"{summary.seconds:.1f} s ({rate:.2f}/s): {summary.source_bytes / 1e6:.2f} MB -> "
        f"{summary.output_bytes / 1e6:.2f} MB" + (f", mean {bpp:.4f} bpp" if verb == "encoded" and bpp else ""),
        err=True,
    )
    for record in failures:  # the path once: most errors already name it
        error, source = record["error"], record["source"]
        click.echo(f"semcodec: failed: {error if source in error else f'{source}: {error}'}", err=True)
    if failures:
        sys.exit(1)


def _weights_str(ctx: click.Context) -> str | None:
    weights = ctx.obj.get("weights")
    return str(weights) if weights is not None else None


_workers = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes (Ray actors with --engine ray); each loads the model once.",
)
_engine = click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: a process pool on this machine; ray: Ray tasks (pip install 'semcodec[ray]').",
)


@batch.command("encode")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("-q", "--quality", type=int, default=None)
@click.option("--tokens", "keep_tokens", type=click.IntRange(min=1), default=None, help="As `encode --tokens`.")
@click.option("--token-space", default=None, help="As `encode --token-space` (default: the shipped tower's layer).")
@_effort
@_refine_steps
@_max_pixels
@_workers
@_engine
@click.pass_context
def batch_encode(
    ctx: click.Context,
    src: str,
    dst: Path,
    quality: int | None,
    keep_tokens: int | None,
    token_space: str | None,
    effort: int,
    refine_steps: int | None,
    max_pixels: int | None,
    workers: int,
    engine: str,
) -> None:
    """Encode every image under SRC (folder, glob or .txt list) to DST/<relative path>.smc."""
    from semcodec.batch.jobs import plan_jobs
    from semcodec.cli.checks import check_encode_settings

    registry = _registry(ctx)
    check_encode_settings(registry, quality, token_space)
    # the manifest records the effective settings, so a default and the same value given explicitly agree
    quality = registry.default_quality if quality is None else quality
    served = registry.model(registry.quality(quality).model)
    token_space = registry.requested_space(token_space) or served.token_space
    steps = refinement_steps(effort, refine_steps)
    jobs = plan_jobs(src, "encode", quality, keep_tokens, token_space, steps, max_pixels=max_pixels)
    _run_batch(ctx, jobs, dst, workers, engine, "encoded")


@batch.command("decode")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--target", type=click.Choice(["pixels", "tokens"]), default="pixels", show_default=True)
@_token_dtype
@_max_pixels
@_workers
@_engine
@click.pass_context
def batch_decode(
    ctx: click.Context, src: str, dst: Path, target: str, dtype: str, max_pixels: int | None, workers: int, engine: str
) -> None:
    """Decode every bitstream under SRC to DST (.png, or .safetensors tokens)."""
    from semcodec.batch.jobs import plan_jobs

    jobs = plan_jobs(src, f"decode-{target}", token_dtype=dtype, max_pixels=max_pixels)
    _run_batch(ctx, jobs, dst, workers, engine, "decoded")
