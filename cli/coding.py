"""``semcodec encode``, ``decode`` and ``info``: one image or one file at a time."""

from __future__ import annotations

import time
from pathlib import Path

import click

from semcodec.cli.app import (
    TARGET_SUFFIX,
    _codec,
    _effort,
    _max_pixels,
    _read_input,
    _refine_steps,
    _registry,
    _token_dtype,
    _write_output,
    main,
    refinement_steps,
)
from semcodec.errors import SemcodecError


def _writes_semantic_layer(registry, token_space: str | None, no_semantic_layer: bool) -> bool:
    """Whether an encode with these settings writes a semantic layer (torch-free)."""
    space = registry.requested_space(token_space)
    return not no_semantic_layer and space is not None and registry.semantic_layer_for(space) is not None


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
@_max_pixels
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
    max_pixels: int | None,
    force: bool,
    quiet: bool,
) -> None:
    """Compress image INPUT into bitstream OUTPUT ('-' for stdin/stdout)."""
    from semcodec.cli.checks import check_encode_settings, check_input_file, check_output, check_token_count
    from semcodec.codec.image_io import MAX_PIXELS, read_image

    steps = refinement_steps(effort, refine_steps)
    check_input_file(input_path)
    check_output(output_path, force)
    registry = _registry(ctx)
    check_encode_settings(registry, quality, token_space)
    if not _writes_semantic_layer(registry, token_space, no_semantic_layer):  # else the tower counts them
        check_token_count(input_path, keep_tokens)
    image = read_image(
        _read_input(input_path) if input_path == "-" else input_path, max_pixels=max_pixels or MAX_PIXELS
    )

    from semcodec.codec.refine import RefineConfig  # torch from here on

    codec = _codec(ctx, max_pixels)
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
    help="pixels: a PNG for people; tokens: MLLM-ready tokens without decoding pixels, from the "
    "semantic layer alone when the file has one (a file encoded with --tokens N: those N, with their "
    "grid positions), else from the base layer.",
)
@_token_dtype
@click.option("--token-space", default=None, help="Tokens target: override the token space the file records.")
@click.option(
    "--tower-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Tokens target: the local tower file a split head finishes with (not needed for efficientnet-lite0).",
)
@_max_pixels
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
    max_pixels: int | None,
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
    codec = _codec(ctx, max_pixels)
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
    first_reader = bitstream.FIRST_WRITTEN_BY[header.version]
    lines = [
        f"file:        {input_path} ({len(data)} bytes)",
        f"format:      semcodec v{header.version} (read by semcodec {first_reader} and later)",
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
