"""``semcodec train-semantic-layer``: train the semantic base layer on a tower's split maps."""

from __future__ import annotations

from pathlib import Path

import click

from semcodec.cli.app import main
from semcodec.cli.training import _training_data, _training_images


def _context_arch(slices: int | None) -> dict:
    """The layer config's context fields for ``--context SLICES`` (none without it)."""
    return {} if slices is None else {"context_slice_channels": slices, "context_spatial": True}


@main.command("train-semantic-layer")
@click.option("--tower", default="efficientnet-lite0", show_default=True, help="The tower whose split map is coded.")
@_training_data
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Training folder (a registry, like train --out): the layer's file and entry, overwritten as it "
    "trains; the layer is resumed when the folder has it.",
)
@click.option("--layer-id", default=None, help="The layer's id in --out  [default: sem-TOWER].")
@click.option(
    "--init-from",
    default=None,
    help="Start a layer new to --out from this semantic layer of the packaged weights (e.g. sem-lite0-b7).",
)
@click.option("--steps", type=int, default=20000, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Training time after the map cache is built.")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--kl-weight", type=float, default=None, help="w in D = MSE + w * KL (default: the module's).")
@click.option(
    "--token-weight",
    type=float,
    default=None,
    help="t in D = MSE + w * KL + t * token error (the tail's tokens; default: the module's).",
)
@click.option("--lambdas", default=None, help="lambda per quality, comma-separated (default: the module's).")
@click.option("--crops-per-image", type=int, default=8, show_default=True)
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep the tower's maps of the training crops in this file (and reuse it when it exists).",
)
@click.option("--save-every", type=int, default=500, show_default=True)
@click.option("--max-images", type=int, default=None, help="Use only the first N images.")
@click.option(
    "--context",
    "context_slices",
    type=click.IntRange(min=1),
    default=None,
    help="Code the latent with a channel-wise context of this many channels a slice and a checkerboard "
    "(a new layer, or one grown from --init-from, its context starting as the identity).",
)
@click.option("--tiny", is_flag=True, help="A tiny architecture (for tests and smoke runs).")
def train_semantic_layer(
    tower: str,
    data_dirs: tuple[Path, ...],
    out: Path,
    layer_id: str | None,
    init_from: str | None,
    steps: int,
    max_minutes: float | None,
    batch: int,
    lr: float,
    kl_weight: float | None,
    token_weight: float | None,
    lambdas: str | None,
    crops_per_image: int,
    cache: Path | None,
    save_every: int,
    max_images: int | None,
    context_slices: int | None,
    tiny: bool,
) -> None:
    """Train a semantic base layer: TOWER's split map coded at the encoder (R + lambda * D)."""
    from semcodec.training import semantic_layer as sl
    from semcodec.weights.towers import load_tower

    paths = _training_images(data_dirs, max_images)
    try:
        lambda_values = tuple(float(v) for v in lambdas.split(",")) if lambdas else sl.DEFAULT_SEMANTIC_LAMBDAS
    except ValueError:
        raise click.BadParameter(
            f"{lambdas!r} is not a comma-separated list of numbers", param_hint="--lambdas"
        ) from None
    cfg = sl.SemanticLayerTraining(
        tower=tower,
        data=paths,
        out=out,
        layer_id=layer_id or f"sem-{tower}",
        init_from=init_from,
        steps=steps,
        max_minutes=max_minutes,
        batch=batch,
        lr=lr,
        lambdas=lambda_values,
        kl_weight=sl.DEFAULT_KL_WEIGHT if kl_weight is None else kl_weight,
        token_weight=sl.DEFAULT_TOKEN_WEIGHT if token_weight is None else token_weight,
        crops_per_image=crops_per_image,
        save_every=save_every,
        arch={**(sl.TINY_ARCH if tiny else {}), **_context_arch(context_slices)},
        cache=cache,
    )
    result = sl.run(cfg, load_tower(tower, None))
    summary = f"{result['steps']} steps -> {cfg.layer_id} in {out}; held out: {result['held_out']}"
    click.echo(f"semantic layer for {tower}: {summary}", err=True)


@main.command("train-semantic-condition")
@_training_data
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Training folder: the model's file and registry entry (overwritten at the end).",
)
@click.option("--base", default=None, help="The pixel model grown  [default: the default quality's].")
@click.option("--model-name", default=None, help="The new model's id  [default: BASE.s1].")
@click.option("--max-minutes", type=float, default=30.0, show_default=True, help="Training time after the cache.")
@click.option("--steps", type=int, default=100000, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--hidden", type=int, default=64, show_default=True, help="The refiner's width.")
@click.option("--max-images", type=int, default=None, help="Use only the first N images.")
@click.pass_context
def train_semantic_condition(
    ctx: click.Context,
    data_dirs: tuple[Path, ...],
    out: Path,
    base: str | None,
    model_name: str | None,
    max_minutes: float,
    steps: int,
    batch: int,
    lr: float,
    hidden: int,
    max_images: int | None,
) -> None:
    """Grow a pixel model whose entropy model reads the default semantic layer (only the new refiner
    trains, rate only, on cached latents); install it with tools/ship_conditioned.py."""
    import numpy as np

    from semcodec.codec import Codec
    from semcodec.training import semantic_condition as sc

    codec = Codec(ctx.obj.get("weights"))
    registry = codec.registry
    base = base or registry.quality(registry.default_quality).model
    layer = registry.semantic_layer_for(registry.default_token_space) if registry.default_token_space else None
    if layer is None:
        raise click.UsageError("these weights write no semantic layer by default: nothing to condition on")
    base_model, _ = codec.model(base)
    paths = _training_images(data_dirs, max_images)

    def semantic_latent(pixels: np.ndarray):
        return codec.semantic_latent(pixels)

    cache = sc.photo_latents(paths, base_model, semantic_latent, log=lambda m: click.echo(m, err=True))
    model = sc.grown_with_refiner(base_model, cache[0].semantic.shape[1], hidden)
    taken = sc.train_refiner(model, cache, max_minutes, steps, lr, batch, log=lambda m: click.echo(m, err=True))
    name = model_name or f"{base}.s1"
    info = {"steps": taken, "batch": batch, "lr": lr, "photos": len(cache), "max_minutes": max_minutes}
    sha = sc.save_conditioned(out, model, name, registry.model(base), layer, info)
    click.echo(f"{name} ({taken} steps, reads {layer.name}) -> {out} (sha256 {sha[:16]})", err=True)
