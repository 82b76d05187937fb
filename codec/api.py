"""Encode images to semcodec bitstreams and decode them to pixels or tokens.

Encode, in stages: analyse (pad, ``g_a`` with the quality's gain, optional refinement) -> side
information (``h_a``, z coded with the EntropyBottleneck's frozen integer CDFs, then the encoder
continues from its own decoded z, as the decoder will) -> entropy parameters (``h_s`` in exact
fixed-point integers) -> choose tokens (a pruned file) -> code the latent (the schedule's slices
and checkerboard halves, base and enhancement layers apart) -> pack. Decode reverses it: unpack ->
side information -> the same walk, decoding -> ``g_s`` for pixels, or the base layer alone through
a token head for tokens. Chunk layout: :mod:`semcodec.bitstream.layout`; the walk and the exact
parameters: :mod:`semcodec.codec.latent_walk`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from semcodec import bitstream
from semcodec.codec import entropy, tiled, tiling
from semcodec.codec.image_io import ImageInput, LoadedImage, encode_png, latent_token_count, load_image, too_large
from semcodec.codec.latent_walk import (
    LatentWalk,
    Timer,
)
from semcodec.codec.refine import RefineConfig, refine_latent, token_fidelity
from semcodec.codec.semantic_condition import on_latent_grid
from semcodec.codec.semantic_stages import SemanticLayerStages
from semcodec.codec.stages import (
    choose_tokens,
    code_latent,
    coded_tokens,
    conditioned_side,
    decode_part,
    decode_side_information,
    layer_decoders,
    pack_file,
    pruned_mask,
    refinement_for,
    side_information,
    token_mask,
)
from semcodec.codec.tensors import image_tensor, pad_to_stride
from semcodec.codec.token_choice import content_tokens
from semcodec.codec.token_file import TokenOutput, token_file_bytes, token_metadata
from semcodec.errors import BitstreamError, ConversionWarning, InputError, WeightsError
from semcodec.models import SemanticHyperprior
from semcodec.models.token_head import latent_tokens
from semcodec.weights import (
    ModelEntry,
    QualityLevel,
)

__all__ = ["Codec", "Decoded", "EncodeResult", "Symbols", "TokenOutput", "decode", "decode_tokens", "encode"]
__all__ += ["image_tensor", "pad_to_stride", "token_file_bytes"]


@dataclass(frozen=True)
class Symbols:
    """Every integer the entropy coder saw, in coding order."""

    z: np.ndarray  # (channels, positions) int32, offset so the first table entry is 0
    y: np.ndarray  # (channels * h * w,) int32, round(y - mean) clamped to the symbol bound (tiled: int16)

    def crc32(self) -> int:
        return entropy.symbols_crc32(self.z, self.y)


@dataclass
class EncodeResult:
    data: bytes
    symbols: Symbols
    height: int
    width: int
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    refined_steps: int = 0  # encoder refinement steps taken (0: none asked, or the image was too large)

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / (self.height * self.width)


@dataclass
class Decoded:
    header: bitstream.Header
    model: SemanticHyperprior
    gain_index: int
    y_hat: torch.Tensor  # (1, C, h, w) on the padded grid
    symbols: Symbols
    seconds: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None  # kept latent tokens (h*w,) when encoded with keep_tokens


class Codec(SemanticLayerStages):
    """Codes images with the registry's models (:class:`~semcodec.codec.assets.CodecAssets` loads them)."""

    @cached_property
    def default_quality(self) -> int:
        return self.registry.default_quality

    # ---------------------------------------------------------------- encode
    def encode(
        self,
        image: ImageInput,
        quality: int | None = None,
        token_space: str | None = None,
        keep_tokens: int | None = None,
        refine: RefineConfig | None = None,
        effort: int | None = None,
        semantic_layer: bool = True,
    ) -> EncodeResult:
        """Code ``image`` at ``quality``.

        ``token_space``: the tower whose tokens a ``--target tokens`` decoder gets. Default: the
        registry's (:attr:`Registry.default_token_space`: every default file carries that tower's
        semantic layer); ``"none"``: a pixel-only file (the codec's latent space, recorded by
        omission at zero bytes); another tower: its semantic layer, else its distilled head.
        ``keep_tokens=N``: token pruning as rate allocation. In a file with a semantic layer, the N
        of the tower's output tokens the machine gets (by class evidence,
        :mod:`semcodec.codec.semantic_tokens`): the layer codes only what they need and a tokens
        decoder returns those N. In a file without one, the N most important latent tokens plus a
        compact mask; the decoder fills the others with the prior's (context-refined) mean.
        ``refine``: spend encode time optimising the latent for this image (:mod:`semcodec.codec.refine`);
        with a tower's ``token_space``, for that tower's answer on the base layer too. Same format, same decoder.
        ``None``: :data:`~semcodec.codec.defaults.DEFAULT_REFINE_STEPS` steps, the default the CLI and
        batch share. ``effort`` (0..2, as ``--effort``): the refinement of that level
        (:data:`~semcodec.codec.defaults.EFFORT_REFINE_STEPS`), instead of ``refine``.
        ``semantic_layer``: with a tower's ``token_space`` that has a semantic layer, code the tower's own
        map at the encoder first (what a tokens decoder then reads); ``False``: the head on the base layer.
        """
        if effort is not None:
            if refine is not None:
                raise InputError("give effort or refine, not both")
            refine = RefineConfig.for_effort(effort)
        image = load_image(image, max_pixels=self.max_pixels)
        quality = self.default_quality if quality is None else quality
        level = self.registry.quality(quality)
        entry = self.registry.model(level.model)
        model, tables = self.model(level.model)
        space = self._recorded_space(entry, self.registry.requested_space(token_space))
        size, timer, notes = (image.height, image.width), Timer(), list(image.warnings)
        refine = refinement_for(refine, size, notes)
        # with a semantic layer the tokens come from the tower's own map, so a refining encoder
        # steers the pixel latent for pixels alone
        writes_semantic = semantic_layer and self.registry.semantic_layer_for(space) is not None
        if not writes_semantic and space != entry.token_space and space not in entry.token_heads:
            raise WeightsError(f"model {entry.name} has no token head for {space!r}: only its semantic layer serves it")
        steer_for = entry.token_space if writes_semantic else space
        semantic, semantic_latent = None, None
        tiles = tiled.tile_count(size, model)
        if writes_semantic:  # first: a wrong keep_tokens is refused before the pixels are coded
            with timer("semantic"):
                semantic, semantic_latent = self._semantic_chunk(space, quality, image, keep_tokens)
            keep_tokens = None  # the pixel layers are whole
            conditioned = self.registry.conditioned_model(entry.name, self.registry.semantic_layer_for(space).name)
            if conditioned is not None and tiles == 1:  # the pixel layers read what the machine's layer sent
                entry, level = conditioned, conditioned.level(quality)
                model, tables = self.model(entry.name)
        total = latent_token_count(*size, model.latent_stride)
        if keep_tokens is not None and not 1 <= keep_tokens <= total:
            raise InputError(f"keep_tokens={keep_tokens}: a {size[1]}x{size[0]} image has 1..{total} latent tokens")

        if tiles > 1:  # a large image (format 5 on): tile by tile, in bounded memory
            if keep_tokens is not None:
                raise InputError(
                    f"keep_tokens prunes the pixel latent of images up to {tiled.TILE_PIXELS} pixels a side; "
                    "keep the semantic layer's tokens instead (the default token space)"
                )
            if refine is not None:
                notes.append(f"not refined: a {size[1]}x{size[0]} image is coded in tiles")
            with self._progress(tiles, "encode") as bar:
                z, y_symbols, z_coded, base, enhancement = tiled.encode_tiles(
                    model, tables, image.pixels, level.gain_index, timer, bar
                )
            symbols = Symbols(z, y_symbols)
            data = pack_file(entry, quality, size, symbols, z_coded, None, space, base, enhancement, semantic)
            return EncodeResult(data, symbols, *size, notes, timer.seconds, 0)
        x, y = self._analyse(model, level, image, timer)
        content = content_tokens(tuple(y.shape[2:]), size, model.latent_stride)
        chosen = None  # a refining encoder fixes the pruned file's tokens first, then refines them
        if refine is not None:
            with timer("refine"):
                if keep_tokens is not None:
                    chosen = choose_tokens(model, y, size, keep_tokens)
                scored = chosen  # the tokens the file codes: the refinement scores the others as free means
                if scored is None and content is not None:
                    scored = torch.from_numpy(content).reshape(y.shape[2:])
                condition = None
                if model.semantic_refiner is not None:
                    condition = on_latent_grid(semantic_latent, size, tuple(y.shape[2:]), model.latent_stride)
                y = self._refine(model, entry.name, level, steer_for, x, y, size, refine, scored, condition)
        with torch.inference_mode():
            side = side_information(model, tables, y, timer)
            if model.semantic_refiner is not None:
                with timer("hyper"):
                    side = conditioned_side(tables, side, semantic_latent, size, model.latent_stride)
            mask = pruned_mask(model, tables, side, y, size, keep_tokens, chosen, timer)
            coded = coded_tokens(mask, content)
            y_symbols, base, enhancement = code_latent(tables, side, y, coded, timer)
        symbols = Symbols(side.symbols, y_symbols.reshape(-1))
        data = pack_file(entry, quality, size, symbols, side.coded, mask, space, base, enhancement, semantic)
        return EncodeResult(data, symbols, *size, notes, timer.seconds, refine.steps if refine else 0)

    def _recorded_space(self, entry: ModelEntry, token_space: str | None) -> str:
        self.registry.check_encode_space(entry.name, token_space)
        return token_space or entry.token_space

    def _analyse(
        self, model: SemanticHyperprior, level: QualityLevel, image: LoadedImage, timer: Timer
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The padded image (``None`` for a large one) and its gained latent ``y = g_a(x) * gain[q]``;
        a large image's stem runs in tiles (:mod:`semcodec.codec.tiling`)."""
        with torch.inference_mode(), timer("transform"):
            h, w = image.height, image.width
            if h * w <= tiling.TILE_ABOVE_PIXELS:
                x = pad_to_stride(image_tensor(image.pixels), model.downsampling)
                return x, model.analysis(x, level.gain_index)
            s = model.downsampling
            stem, tokens = model.analysis_stages()
            padded = (-(-h // s) * s, -(-w // s) * s)
            with self._progress(tiling.tile_count(*padded), "encode") as bar:
                features = tiling.analysis_stem(stem, image.pixels, padded, model.latent_stride, bar)
            return None, tokens(features) * model.quality_gain(level.gain_index)

    def _progress(self, total: int, what: str):
        """A progress bar for a long tiled stage when :attr:`progress` is on (the CLI on a terminal)."""
        from tqdm import tqdm

        return tqdm(total=total, desc=what, unit="tile", disable=not self.progress or total < 16, leave=False)

    def _refine(
        self,
        model: SemanticHyperprior,
        model_name: str,
        level: QualityLevel,
        space: str,
        x: torch.Tensor,
        y: torch.Tensor,
        size: tuple[int, int],
        config: RefineConfig,
        keep: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``y`` refined for ``R + lambda D`` (and the token space's head, if it has one); ``condition``:
        the semantic latent on y's grid, for a model that reads it."""
        x, y = x.clone(), y.clone()  # out of inference mode: autograd needs ordinary tensors
        semantic = None
        if space != self.registry.model(model_name).token_space:
            head, info = self.token_head(model_name, space)
            tower = self.tower(space, sha256=info.tower_sha256)
            semantic = token_fidelity(head, tower, x[:, :, : size[0], : size[1]])
        keep = keep[None, None] if keep is not None else None
        return refine_latent(
            model, x, y, level.gain_index, level.lmbda, size, config, semantic, keep, self.progress, condition=condition
        )[0]

    # ---------------------------------------------------------------- decode
    def decode_symbols(self, data: bytes, base_only: bool = False) -> Decoded:
        """Parse, entropy-decode and verify: ``y_hat`` on the latent grid plus the decoded symbols.

        ``base_only`` reads the base layer alone (``data`` may be just that prefix of the file);
        the enhancement channels of ``y_hat`` are then the hyperprior's means.
        """
        return self._decode_parsed(bitstream.unpack(data, until=bitstream.BASE_CHUNK if base_only else None), base_only)

    def _decode_parsed(self, header: bitstream.Header, base_only: bool) -> Decoded:
        """:meth:`decode_symbols` of a parsed file (with its chunks through the base layer, at least)."""
        timer = Timer()
        entry, level = self._decoder_for(header)
        model, tables = self.model(entry.name)
        if tiled.tile_count((header.height, header.width), model, header.version) > 1:
            if model.semantic_refiner is not None:
                raise BitstreamError(f"corrupt bitstream: model {entry.name} codes no image in tiles")
            y_hat, z, y = tiled.decode_tiles(model, tables, header, base_only, timer)
            symbols = Symbols(z, y)
            if not base_only and symbols.crc32() != header.symbols_crc:
                raise BitstreamError("decoded symbols fail their CRC: the file is corrupt")
            return Decoded(header, model, level.gain_index, y_hat, symbols, timer.seconds)
        with torch.inference_mode():
            side = decode_side_information(model, tables, header, timer)
            if model.semantic_refiner is not None:
                latent = self._conditioning_latent(header, entry)
                with timer("hyper"):
                    side = conditioned_side(tables, side, latent, (header.height, header.width), model.latent_stride)
            grid = tuple(side.means_fixed.shape[2:])
            mask = token_mask(header, grid[0] * grid[1])
            coded = mask
            if header.version >= bitstream.PADDING_UNCODED_FROM:
                coded = coded_tokens(mask, content_tokens(grid, (header.height, header.width), model.latent_stride))
            base_crc, layers = layer_decoders(header, model, base_only)
            walk = LatentWalk(tables, side.means_fixed, side.scales_fixed, timer, scale_table=header.version == 1)
            for part in walk.parts(base_only):
                walk.give(decode_part(part, layers[part.slice.end > model.base_channels], coded, timer))
            symbols = Symbols(side.symbols, walk.symbols.reshape(-1))
            if entropy.symbols_crc32(walk.symbols[: model.base_channels]) != base_crc or (
                not base_only and symbols.crc32() != header.symbols_crc
            ):
                raise BitstreamError(
                    "decoded symbols fail their CRC: the file is corrupt or the entropy model here "
                    "differs from the encoder's"
                )
        return Decoded(header, model, level.gain_index, walk.y_hat, symbols, timer.seconds, mask)

    def _decoder_for(self, header: bitstream.Header) -> tuple[ModelEntry, QualityLevel]:
        """The model the file names (its own quality table: files keep their meaning), or a clear refusal."""
        if header.height * header.width > self.max_pixels:
            raise BitstreamError(too_large("the bitstream's image", header.width, header.height, self.max_pixels))
        entry = self.registry.decoding_model(header.model_id, header.weights_hash)
        level = entry.level(header.quality)
        if level is None:
            raise BitstreamError(f"bitstream quality {header.quality} is not served by model {entry.name}")
        return entry, level

    def decode(self, data: bytes) -> np.ndarray:
        """Bitstream -> RGB uint8 pixels at exactly the original size."""
        return self.decode_pixels(data)[0]

    def decode_pixels(self, data: bytes) -> tuple[np.ndarray, dict[str, float]]:
        decoded = self.decode_symbols(data)
        header, model, gain_index, y_hat, decode_seconds = (
            decoded.header,
            decoded.model,
            decoded.gain_index,
            decoded.y_hat,
            decoded.seconds,
        )
        del decoded  # its symbols are checked: a large photo's (75 MB at 50 MP) leave room for synthesis
        start = time.perf_counter()
        h, w = header.height, header.width
        with torch.inference_mode():
            if h * w <= tiling.TILE_ABOVE_PIXELS:
                x_hat = model.synthesis(y_hat, gain_index)
                pixels = x_hat[0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            elif header.version >= bitstream.TILED_FROM:  # g_s in bands, the tail in tiles
                with self._progress(tiling.tile_count(h, w), "decode") as bar:
                    pixels = tiled.synthesis_bands(model, y_hat, gain_index, (h, w), bar)
            else:  # a large image: the full-resolution stages in tiles, straight into the uint8 image
                tokens, tail = model.synthesis_stages()
                grid = tokens(model.synthesis_input(y_hat, gain_index))
                with self._progress(tiling.tile_count(h, w), "decode") as bar:
                    pixels = tiling.synthesis_tail(tail, grid, (h, w), model.latent_stride, bar)
        seconds = {**decode_seconds, "transform": time.perf_counter() - start}
        return np.ascontiguousarray(pixels), seconds

    def decode_tokens(
        self, data: bytes, token_space: str | None = None, tower_weights: Path | str | None = None
    ) -> TokenOutput:
        """Bitstream -> (N, D) tokens without synthesising pixels.

        The token space is ``token_space`` if given, else the one the bitstream records, else the
        codec's own latent space. A tower's space needs the head distilled for it (``semcodec
        distill``); the latent space is the decoded grid with the quality gain undone.
        ``tower_weights``: the local tower file a split head finishes with, for this call only
        (otherwise ``tower_files``; see :meth:`token_head`).
        """
        header = bitstream.unpack(data, until=bitstream.tokens_prefix(token_space))
        semantic = header.find(bitstream.SEMANTIC_CHUNK)
        if semantic is not None:
            chunk = bitstream.unpack_semantic(semantic, header.version)
            layer = self._semantic_layer_of(header, chunk)
            if token_space in (None, layer.tower):
                return self._semantic_tokens(header, layer, chunk)
        # not served by a semantic layer: this parse reached the base layer, decode it as it is
        decoded = self._decode_parsed(header, base_only=True)
        header, model = decoded.header, decoded.model
        entry = self.registry.model(header.model_id)
        space = token_space or bitstream.token_space_of(header) or entry.token_space
        with torch.inference_mode():
            grid = model.semantic_grid(decoded.y_hat, decoded.gain_index, header.height, header.width)
            positions = None
            if space == entry.token_space:
                tokens, grid_hw = latent_tokens(grid[:, : model.base_channels])[0], tuple(grid.shape[2:])
                tower = {"tower": "none (codec latent tokens; no distilled head)", "layer": "latent y_hat / gain"}
                if decoded.mask is not None:  # pruned at the encoder: hand over only the coded tokens
                    rows, cols = np.divmod(np.flatnonzero(decoded.mask), decoded.y_hat.shape[3])
                    positions = torch.from_numpy(rows * grid_hw[1] + cols)
                    tokens = tokens[positions]
            else:
                head, info = self.token_head(entry.name, space, tower_weights)
                tokens, grid_hw = head(grid)[0], head.grid
                tower = {"tower": space, "layer": info.layer, "tower_sha256": info.tower_sha256}
        kept = int(decoded.mask.sum()) if decoded.mask is not None else None
        read = header.header_bytes + header.payload_bytes
        metadata = token_metadata(header, tokens, space, tower, grid_hw, read, "base", {}, kept)
        return TokenOutput(tokens.contiguous(), metadata, positions)

    def decode_png(self, data: bytes) -> bytes:
        return encode_png(self.decode(data))


# ------------------------------------------------------------------- module-level convenience API
_DEFAULT: dict[str, Codec] = {}


def _codec(weights_dir: Path | str | None) -> Codec:
    key = str(weights_dir)
    if key not in _DEFAULT:
        _DEFAULT[key] = Codec(weights_dir)
    return _DEFAULT[key]


def encode(
    image: ImageInput,
    quality: int | None = None,
    weights_dir: Path | str | None = None,
    effort: int = 0,
    token_space: str | None = None,
) -> bytes:
    """Image (path, file bytes, PIL.Image or numpy array; see :func:`~semcodec.codec.image_io.load_image`)
    -> semcodec bitstream bytes. Conversions warn with :class:`~semcodec.errors.ConversionWarning`.
    ``effort``: as ``semcodec encode --effort`` (0, the default: one analysis pass); ``token_space``:
    as ``--token-space`` (with the tower's semantic layer when the registry has one)."""
    import warnings

    result = _codec(weights_dir).encode(image, quality, token_space=token_space, effort=effort)
    for note in result.warnings:
        warnings.warn(note, ConversionWarning, stacklevel=2)
    return result.data


def decode(data: bytes | Path | str, weights_dir: Path | str | None = None) -> np.ndarray:
    """Bitstream (bytes or a path) -> HxWx3 uint8 pixels."""
    return _codec(weights_dir).decode(_read(data))


def decode_tokens(
    data: bytes | Path | str,
    weights_dir: Path | str | None = None,
    token_space: str | None = None,
    tower_weights: Path | str | None = None,
) -> torch.Tensor:
    """Bitstream (bytes or a path) -> (N, D) float32 tokens, for an MLLM pipeline.

    ``token_space`` overrides the space the bitstream records; ``tower_weights`` is the local tower
    file a split head needs (not needed for efficientnet-lite0)."""
    return _codec(weights_dir).decode_tokens(_read(data), token_space, tower_weights).tokens


def _read(data: bytes | Path | str) -> bytes:
    return data if isinstance(data, (bytes, bytearray)) else Path(data).read_bytes()
