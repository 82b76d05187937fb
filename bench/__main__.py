"""``python -m semcodec.bench kodak [--dataset DIR] [--json FILE]``."""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import click
import torch

warnings.filterwarnings("ignore", category=FutureWarning)

DEFAULT_KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"


@click.group()
def main() -> None:
    """semcodec benchmarks (print markdown tables)."""


@main.command()
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DEFAULT_KODAK,
              show_default=True)
@click.option("--weights", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--limit", type=int, default=None, help="Only the first N images.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def kodak(dataset: Path, weights: Path | None, limit: int | None, json_path: Path | None) -> None:
    """Mean bpp / PSNR / MS-SSIM and per-stage seconds per image, for every quality."""
    from semcodec.bench import kodak as bench

    rows = bench.run(dataset, weights, limit)
    click.echo(f"# {dataset} ({rows[0]['images']} images), {platform.processor() or platform.machine()}, "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    click.echo(bench.table(rows))
    if json_path:
        bench.save(rows, json_path)


if __name__ == "__main__":
    main()
