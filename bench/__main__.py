"""``python -m semcodec.bench kodak [--dataset DIR] [--json FILE]``."""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

import click
import numpy as np
import torch

from semcodec.bench.classical import EQUAL_BYTES
from semcodec.bench.datasets import DATA_ROOT, image_paths
from semcodec.codec.defaults import EFFORT_REFINE_STEPS

warnings.filterwarnings("ignore", category=FutureWarning)

DEFAULT_KODAK = DATA_ROOT / "kodak"
DEFAULT_ANCHORS = DATA_ROOT.parent / "anchors" / "kodak-published.json"


_dataset = click.option(
    "--dataset",
    type=click.Path(exists=True, path_type=Path),
    default=DEFAULT_KODAK,
    show_default=True,
    help="A folder of images, or a .txt list relative to the shared data (e.g. bench/sets/structured.txt).",
)
_weights = click.option(
    "--weights",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A weights folder (e.g. a training run's) instead of the installed weights.",
)
_json = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the rows here.",
)


@click.group()
def main() -> None:
    """semcodec benchmarks (print markdown tables)."""


@main.command()
@_dataset
@_weights
@click.option("--limit", type=int, default=None, help="Only the first N images.")
@click.option(
    "--token-space", default=None, help="Encode as `encode --token-space` does (the file's bytes count its tokens)."
)
@click.option(
    "--against",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An earlier `bench rd` JSON of the same images: also BD-rate these rows against its curves.",
)
@_json
def kodak(
    dataset: Path,
    weights: Path | None,
    limit: int | None,
    token_space: str | None,
    against: Path | None,
    json_path: Path | None,
) -> None:
    """Mean bpp / PSNR / MS-SSIM and per-stage seconds per image, for every quality."""
    from semcodec.bench import kodak as bench
    from semcodec.bench.provenance import weights_header

    rd_run = None
    if against:
        try:
            rd_run = bench.load_rd_run(against, len(image_paths(dataset)[:limit]))
        except ValueError as error:
            raise click.UsageError(f"--against {against}: {error}") from None
    rows = bench.run(dataset, weights, limit, token_space=token_space)
    click.echo(f"# {dataset} ({rows[0]['images']} images){f', --token-space {token_space}' if token_space else ''}")
    click.echo(weights_header(weights))
    click.echo(bench.table(rows))
    if rd_run is not None:
        table = bench.bd_against(rows, rd_run)
        click.echo(f"\nBD-rate (PSNR) against the curves of {against.name}:\n")
        click.echo("| curve | BD-rate |\n|---|---:|")
        click.echo("\n".join(f"| {name} | {value:+.2f}% |" for name, value in table.items()))
    if json_path:
        bench.save(rows, json_path)


DEFAULT_FILES = "semcodec default files (+ semantic layer)"
"""`bench rd`'s second curve: the files `semcodec encode` writes by default, semantic layer included."""


@main.command()
@_dataset
@_weights
@click.option(
    "--anchors",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Published curves to BD-rate against (default: the shared Kodak anchors, when the dataset is Kodak).",
)
@click.option("--limit", type=int, default=None, help="Only the first N images (a quick look, not a result).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Folder for rd.json and rd.png.",
)
@click.option(
    "--refine-steps",
    type=int,
    default=0,
    show_default=True,
    help="Also run semcodec with N steps of encoder latent refinement (a second curve; slow: ~0.5 s a step per image).",
)
@click.option(
    "--bd-qualities",
    "bd_subsets",
    multiple=True,
    metavar="FIRST-LAST",
    help="Also BD-rate semcodec's points of these qualities alone (repeatable, e.g. 1-4): the same run, "
    "a narrower rate range, comparable with a model that has only those levels.",
)
def rd(
    dataset: Path,
    weights: Path | None,
    anchors: Path | None,
    limit: int | None,
    out: Path,
    refine_steps: int,
    bd_subsets: tuple[str, ...],
) -> None:
    """semcodec vs JPEG/WebP/AVIF/JPEG 2000 (same run) and published curves: table, BD-rate, plot, speed.

    The semcodec curve is pixel-only files (`--token-space none`); default files, which also carry
    the semantic layer, are a second curve beside it."""
    import json

    from semcodec.bench import kodak as semcodec_bench
    from semcodec.bench import rd as rd_bench
    from semcodec.bench import speed
    from semcodec.codec.image_io import read_image
    from semcodec.codec.refine import RefineConfig
    from semcodec.weights import PIXELS_ONLY, load_registry

    subsets = [_quality_range(text) for text in bd_subsets]  # a typo fails before the long runs
    out.mkdir(parents=True, exist_ok=True)
    images = [read_image(p).pixels for p in image_paths(dataset)[:limit]]
    refined = (
        {
            f"semcodec refined {refine_steps}": semcodec_bench.run(
                dataset, weights, limit, RefineConfig(refine_steps), PIXELS_ONLY
            )
        }
        if refine_steps > 0
        else {}
    )
    # the pixel headline is pixel-only files; default files (with the semantic layer) beside them
    ours = {"semcodec": semcodec_bench.run(dataset, weights, limit, token_space=PIXELS_ONLY), **refined}
    if load_registry(weights).default_token_space is not None:
        ours[DEFAULT_FILES] = semcodec_bench.run(dataset, weights, limit)
    same_run = rd_bench.classical_curves(images)
    if anchors is None and dataset.resolve() == DEFAULT_KODAK.resolve():
        anchors = DEFAULT_ANCHORS  # published Kodak figures mean nothing on another set
    anchors_curves = rd_bench.published(anchors) if anchors is not None else {}
    bd_curves = {
        **ours,
        **{
            f"semcodec q{first}-{last}": [p for p in ours["semcodec"] if first <= p["quality"] <= last]
            for first, last in subsets
        },
    }
    bd = {
        name: {
            **rd_bench.bd_table(points, same_run),
            **{f"{k} (published)": v for k, v in rd_bench.bd_table(points, anchors_curves).items()},
        }
        for name, points in bd_curves.items()
    }
    reference = speed.compressai_hyperprior(images)
    click.echo(
        f"# {dataset} ({len(images)} images), {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    click.echo(rd_bench.format_report(ours, same_run, bd))
    if DEFAULT_FILES in ours:
        layer_cost = rd_bench.bd_table(ours[DEFAULT_FILES], {"pixel-only": ours["semcodec"]})["pixel-only"]
        bd[DEFAULT_FILES]["semcodec pixel-only files"] = layer_cost
        click.echo(f"\nDefault files (+ semantic layer) against pixel-only files: {layer_cost:+.1f}% BD-rate (PSNR)")
    click.echo("")
    click.echo(speed.speed_table(ours["semcodec"], reference))
    for name, rows in refined.items():
        click.echo(f"\n{name}: encode s per image " + ", ".join(f"q{r['quality']} {r['enc_s']:.1f}" for r in rows))
    plot_curves = {**ours, **same_run, **{f"{k} (published)": v for k, v in anchors_curves.items()}}
    rd_bench.plot(plot_curves, out / "rd.png")
    (out / "rd.json").write_text(
        json.dumps(
            {
                "semcodec": ours["semcodec"],
                "semcodec_default_files": ours.get(DEFAULT_FILES),
                "bd_rate_default_files": bd.get(DEFAULT_FILES),
                "semcodec_refined": refined,
                "classical": same_run,
                "bd_rate": bd["semcodec"],
                "bd_rate_refined": {name: bd[name] for name in refined},
                "bd_rate_qualities": {name: bd[name] for name in bd_curves if name not in ours},
                "compressai_hyperprior_speed": reference,
            },
            indent=1,
        )
        + "\n"
    )
    click.echo(f"\nwrote {out / 'rd.json'} and {out / 'rd.png'}")


def _quality_range(text: str) -> tuple[int, int]:
    try:
        first, last = (int(v) for v in text.split("-"))
    except ValueError:
        raise click.BadParameter(f"expected FIRST-LAST, got {text!r}", param_hint="--bd-qualities") from None
    return first, last


@main.command()
@click.option("--tower", default="efficientnet-lite0", show_default=True, help="Tower with a classifier head.")
@click.option("--tower-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option(
    "--dataset",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_KODAK.parent / "imagenet-sample",
    show_default=True,
)
@_weights
@click.option("--limit", type=int, default=None, help="Evenly spaced subset of N images.")
@click.option("--quality", "qualities", type=int, multiple=True, help="Qualities to run (default: all).")
@click.option("--no-classical", is_flag=True, help="Skip the JPEG/WebP/AVIF equal-bytes columns.")
@click.option(
    "--keep",
    "keeps",
    type=int,
    multiple=True,
    help="Also encode for N tokens (repeatable): the tower's N in a file with a semantic layer "
    "(and those N pruned from the decoded tokens), N latent tokens in one without.",
)
@click.option(
    "--refine-steps",
    type=int,
    multiple=True,
    help="Encoder refinement steps for the tower's tokens (repeatable; 0 = none; default: 0).",
)
@click.option(
    "--semantic-weight",
    type=float,
    default=None,
    help="Refinement's weight of the token distance next to 255^2 * MSE (default: the encoder's).",
)
@_json
def tokens(
    tower: str,
    tower_weights: Path | None,
    dataset: Path,
    weights: Path | None,
    limit: int | None,
    qualities: tuple[int, ...],
    no_classical: bool,
    keeps: tuple[int, ...],
    refine_steps: tuple[int, ...],
    semantic_weight: float | None,
    json_path: Path | None,
) -> None:
    """Token fidelity and the tower's answer: tokens from the bitstream vs pixels vs classical codecs."""
    import json

    from semcodec.bench import tokens as token_bench

    result = token_bench.run(
        dataset,
        tower,
        tower_weights,
        weights,
        limit,
        list(qualities) or None,
        not no_classical,
        list(keeps),
        list(refine_steps) or None,
        semantic_weight,
    )
    click.echo(token_bench.table(result))
    if json_path:
        json_path.write_text(json.dumps(result, indent=1) + "\n")


@main.command()
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_KODAK / "kodim01.png",
    show_default=True,
)
@click.option("--repeats", type=int, default=3, show_default=True)
def startup(image: Path, repeats: int) -> None:
    """Wall time and peak RSS of whole commands (fresh processes, start-up included)."""
    from semcodec.bench import startup as startup_bench
    from semcodec.bench.provenance import weights_header

    click.echo(f"# {image}, {repeats} runs each")
    click.echo(weights_header())
    click.echo(startup_bench.table(startup_bench.run(image, repeats)))


@main.command()
@click.option(
    "--kodak",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_KODAK,
    show_default=True,
    help="The photos the mosaics are made of.",
)
@click.option("--mp", "sizes", type=float, multiple=True, help="Megapixels (repeatable; default 1, 12, 50, 100).")
def large(kodak: Path, sizes: tuple[float, ...]) -> None:
    """Time, peak RSS, bpp and PSNR of encode and decode of Kodak mosaics (fresh processes, default quality)."""
    from semcodec.bench import large as large_bench
    from semcodec.bench.provenance import weights_header

    click.echo(f"# mosaics of {kodak}, default quality and files")
    click.echo(weights_header())
    click.echo(large_bench.table(large_bench.run(kodak, sizes or large_bench.SIZES_MP)))


@main.command("batch")
@_dataset
@click.option("--copies", type=int, default=2, show_default=True, help="Kodak x N copies.")
@click.option("--no-ray", is_flag=True, help="Skip the Ray engine.")
def batch_throughput(dataset: Path, copies: int, no_ray: bool) -> None:
    """Images/s of `semcodec batch encode` for 1 and 2 local workers (and Ray), with peak RSS per worker."""
    from semcodec.bench import batch as batch_bench

    configs = [("local", 1), ("local", 2)] + ([] if no_ray else [("ray", 2)])
    rows = batch_bench.run(dataset, copies, configs)
    click.echo(f"# {dataset} x {copies} copies, {os.cpu_count()} CPUs")
    click.echo(batch_bench.table(rows))


@main.command()
@click.option("--cases", type=int, default=250, show_default=True, help="Mutations per family.")
@click.option("--seed", type=int, default=0, show_default=True)
def reliability(cases: int, seed: int) -> None:
    """Malformed bitstreams and images: cases tried, how each ended, slowest case."""
    from semcodec.bench import reliability as rel
    from semcodec.codec import Codec

    codec = Codec()
    rng = np.random.default_rng(seed)
    image = (rng.random((96, 128, 3)) * 60 + np.linspace(40, 200, 128)[None, :, None]).astype(np.uint8)
    valid = codec.encode(image, 1).data
    click.echo(f"# {cases} cases per family, seed {seed}, a {len(valid)}-byte valid file of a 128x96 image")
    click.echo(rel.tables(rel.bitstream_report(codec, valid, cases, seed), rel.image_report(codec)))


@main.command()
@_dataset
@_weights
@click.option("--limit", type=int, default=None, help="Only the first N images (a quick look, not a result).")
@click.option(
    "--effort",
    "efforts",
    type=click.IntRange(0, len(EFFORT_REFINE_STEPS) - 1),
    multiple=True,
    help="Effort levels to measure (repeatable; default all).",
)
@_json
def effort(
    dataset: Path, weights: Path | None, limit: int | None, efforts: tuple[int, ...], json_path: Path | None
) -> None:
    """Each encoder effort level: bpp / PSNR per quality, BD-rate against effort 0, seconds per image."""
    import json

    from semcodec.bench import effort as bench
    from semcodec.bench.provenance import weights_header

    chosen = list(efforts) or list(range(len(EFFORT_REFINE_STEPS)))
    rows = bench.run(dataset, chosen, weights, limit)
    click.echo(f"# {dataset} ({rows[0]['points'][0]['images']} images)")
    click.echo(weights_header(weights))
    click.echo(bench.table(rows))
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1) + "\n")


@main.command("per-image")
@_dataset
@_weights
@click.option("--quality", "qualities", type=int, multiple=True, help="Qualities (repeatable; default 2 and 4).")
@click.option("--against", type=click.Choice(list(EQUAL_BYTES)), default="AVIF", show_default=True)
@click.option(
    "--shrink", type=click.IntRange(min=1), default=1, show_default=True, help="Downscale each image by N first."
)
@_json
def per_image(
    dataset: Path, weights: Path | None, qualities: tuple[int, ...], against: str, shrink: int, json_path: Path | None
) -> None:
    """Per image: semcodec's PSNR gain over a classical codec at no more bytes (which images lose)."""
    import json

    from semcodec.bench import per_image as bench
    from semcodec.bench.provenance import weights_header

    chosen = list(qualities) or [2, 4]
    rows = bench.run(dataset, chosen, against, weights, shrink)
    click.echo(f"# {dataset} ({len(rows)} images{f', shrunk {shrink}x' if shrink > 1 else ''})")
    click.echo(weights_header(weights))
    click.echo(bench.table(rows, chosen, against))
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
