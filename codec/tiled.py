"""Large images in latent tiles (format 5 on): memory that does not grow with the photo's working set.

A latent grid larger than :data:`~semcodec.bitstream.LATENT_TILE` on a side is coded as independent
tiles (:func:`~semcodec.bitstream.latent_tiles`), each with its own z and its own walk through the
coding schedule, as if it were an image of its own. The encoder runs ``g_a`` in bands of one tile
row (the stem in its own pixel tiles, the ViT blocks on the band plus :data:`ANALYSIS_HALO` latent
rows of real neighbours above and below, so the latent has no seams), codes each tile of the band
and keeps only its bytes. The decoder decodes the tiles into the whole latent grid (the one
whole-image tensor besides the pixels) and synthesises it in bands of rows the same way. What a
coder holds at once is the photo, the latent grid and one band's working set, whatever the size.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from semcodec import bitstream
from semcodec.codec import entropy, tiling
from semcodec.codec.hyperprior import hyper_fixed
from semcodec.codec.latent_walk import EntropyTables, LatentWalk, Timer
from semcodec.codec.stages import code_latent, decode_part, side_information
from semcodec.codec.token_choice import content_tokens
from semcodec.errors import BitstreamError
from semcodec.models import SemanticHyperprior

TILE_PIXELS = bitstream.LATENT_TILE * 16
"""Images larger than this on a side are tiled (with the 1/16 latent of every model so far)."""
ANALYSIS_HALO = 16
"""Latent rows of real neighbours above and below a band for ``g_a``'s ViT blocks (two windows).
The encoder needs no exactness here: the latent it codes is the file's, whatever the halo."""
SYNTHESIS_HALO = 24
"""Latent rows around a band for ``g_s``'s token stage: its two blocks reach 14 rows, the tail's
halo 4 more; a multiple of the window (8) keeps the windows where the whole grid has them."""
SYNTHESIS_BAND = 128
"""Latent rows drawn per band by the decoder (2048 pixels)."""


def release_freed_memory() -> None:
    """Hand the C heap's freed pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Why: a band's tensors of 1-30 MB are served from the heap (glibc raises its mmap threshold to 32
    MB as blocks are freed) and the freed pages stayed with the process: at 50 MP the encoder's RSS
    grew by 400 MB over its bands. Trimming after each tile keeps it at one band's working set."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def tiles_of(grid: tuple[int, int], version: int = bitstream.FORMAT_VERSION) -> list[tuple[int, int, int, int]]:
    """The latent tiles of a padded latent ``grid`` in format ``version`` (one: not tiled)."""
    return bitstream.latent_tiles(grid[0], grid[1], version)


def _content(tile: tuple[int, int, int, int], size: tuple[int, int], stride: int) -> np.ndarray | None:
    """The tokens of ``tile`` that cover some of the image (``None``: all), as for a whole image."""
    top, left, bottom, right = tile
    rows = min(size[0], bottom * stride) - top * stride
    cols = min(size[1], right * stride) - left * stride
    return content_tokens((bottom - top, right - left), (rows, cols), stride)


def encode_tiles(
    model: SemanticHyperprior,
    tables: EntropyTables,
    pixels: np.ndarray,
    gain_index: int,
    timer: Timer,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, bytes, bytes, bytes]:
    """``(z symbols, y symbols, Z, YB, YE payloads)`` of a tiled file of ``pixels`` (H, W, 3 uint8):
    the symbols concatenated in tile order (z along positions, y flat), as the file's CRC covers them;
    y as int16 (every symbol is within +-255), half an int32 copy of a large photo's latent."""
    size = pixels.shape[:2]
    s, down = model.latent_stride, model.downsampling
    padded = (-(-size[0] // down) * down, -(-size[1] // down) * down)
    grid = (padded[0] // s, padded[1] // s)
    tiles = tiles_of(grid)
    stem, tokens = model.analysis_stages()
    z_streams, base_streams, enhancement_streams, z_symbols = [], [], [], []
    y_symbols = np.empty(model.config.latent_channels * grid[0] * grid[1], dtype=np.int16)
    filled = 0
    for band_top in sorted({tile[0] for tile in tiles}):
        band = [tile for tile in tiles if tile[0] == band_top]
        bottom = band[0][2]
        first, last = max(0, band_top - ANALYSIS_HALO), min(grid[0], bottom + ANALYSIS_HALO)
        with torch.inference_mode(), timer("transform"):
            features = tiling.analysis_stem(stem, pixels, padded, s, rows=(first * s, last * s))
            y_band = tokens(features)[:, :, band_top - first : bottom - first] * model.quality_gain(gain_index)
            del features
        for tile in band:
            with torch.inference_mode():
                y = y_band[:, :, :, tile[1] : tile[3]].contiguous()
                side = side_information(model, tables, y, timer)
                symbols, base, enhancement = code_latent(tables, side, y, _content(tile, size, s), timer)
            z_streams.append(side.coded)
            base_streams.append(base)
            enhancement_streams.append(enhancement)
            z_symbols.append(side.symbols)
            y_symbols[filled : filled + symbols.size] = symbols.reshape(-1)
            filled += symbols.size
            release_freed_memory()
            if progress is not None:
                progress.update(1)
        del y_band
    return (
        np.concatenate(z_symbols, axis=1),
        y_symbols,
        bitstream.pack_streams(z_streams),
        bitstream.pack_streams(base_streams),
        bitstream.pack_streams(enhancement_streams),
    )


def decode_tiles(
    model: SemanticHyperprior, tables: EntropyTables, header: bitstream.Header, base_only: bool, timer: Timer
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """``(y_hat on the padded latent grid, z symbols, y symbols)`` of a tiled file (the symbols as
    :func:`encode_tiles` returns them), each tile's base-layer CRC checked (the caller checks the file's)."""
    s, down = model.latent_stride, model.downsampling
    size = (header.height, header.width)
    grid = (-(-size[0] // down) * down // s, -(-size[1] // down) * down // s)
    tiles = tiles_of(grid, header.version)
    if header.find(bitstream.MASK_CHUNK) is not None:
        raise BitstreamError("corrupt bitstream: a tiled file carries a token mask")
    count = len(tiles)
    z_streams = bitstream.unpack_streams(header.chunk(bitstream.Z_CHUNK), count, "z")
    base_streams = bitstream.unpack_streams(header.chunk(bitstream.BASE_CHUNK), count, "base layer")
    enhancement_streams = (
        None
        if base_only
        else bitstream.unpack_streams(header.chunk(bitstream.ENHANCEMENT_CHUNK), count, "enhancement layer")
    )
    cb = model.base_channels
    y_hat = torch.empty(1, model.config.latent_channels, *grid)
    z_symbols: list[np.ndarray] = []
    y_symbols = np.empty(y_hat.numel(), dtype=np.int16)
    filled = 0
    for i, tile in enumerate(tiles):
        top, left, bottom, right = tile
        z_shape = (1, len(tables.pmfs), (bottom - top) * s // down, (right - left) * s // down)
        with timer("entropy"):
            z = entropy.decode_factorized(z_streams[i], tables.pmfs, z_shape[2] * z_shape[3])
        with timer("hyper"), torch.inference_mode():
            means_fixed, scales_fixed = hyper_fixed(tables, z, z_shape)
        channels, crc, coded = bitstream.unpack_base(base_streams[i])
        if channels != cb:
            raise BitstreamError(f"corrupt bitstream: base layer has {channels} channels, model has {cb}")
        layers = (
            entropy.GaussianDecoder(coded),
            None if enhancement_streams is None else entropy.GaussianDecoder(enhancement_streams[i]),
        )
        content = _content(tile, size, s)
        walk = LatentWalk(tables, means_fixed, scales_fixed, timer)
        with torch.inference_mode():
            for part in walk.parts(base_only):
                walk.give(decode_part(part, layers[part.slice.end > cb], content, timer))
        if entropy.symbols_crc32(walk.symbols[:cb]) != crc:
            raise BitstreamError(
                f"decoded symbols of tile {i + 1} of {count} fail their CRC: the file is corrupt or the "
                "entropy model here differs from the encoder's"
            )
        y_hat[:, :, top:bottom, left:right] = walk.y_hat
        z_symbols.append(z)
        y_symbols[filled : filled + walk.symbols.size] = walk.symbols.reshape(-1)
        filled += walk.symbols.size
        del walk
        release_freed_memory()
    return y_hat, np.concatenate(z_symbols, axis=1), y_symbols


def synthesis_bands(
    model: SemanticHyperprior, y_hat: Tensor, gain_index: int, size: tuple[int, int], progress=None
) -> np.ndarray:
    """The (H, W, 3) uint8 image of ``y_hat``, ``g_s`` run band by band (:data:`SYNTHESIS_BAND` latent
    rows with :data:`SYNTHESIS_HALO` around them), the tail in its own pixel tiles."""
    tokens, tail = model.synthesis_stages()
    s, rows = model.latent_stride, y_hat.shape[2]
    pixels = np.empty((size[0], size[1], 3), dtype=np.uint8)
    with torch.inference_mode():
        for top in range(0, rows, SYNTHESIS_BAND):
            if top * s >= size[0]:
                break
            bottom = min(rows, top + SYNTHESIS_BAND)
            first, last = max(0, top - SYNTHESIS_HALO), min(rows, bottom + SYNTHESIS_HALO)
            grid = tokens(model.synthesis_input(y_hat[:, :, first:last], gain_index))
            tiling.synthesis_tail(tail, grid, size, s, progress, pixels=pixels, grid_top=first, rows=(top, bottom))
            del grid
            release_freed_memory()
    return pixels


def tile_count(size: tuple[int, int], model: SemanticHyperprior, version: int = bitstream.FORMAT_VERSION) -> int:
    """How many latent tiles a file of an image of ``size`` codes with ``model`` (1: not tiled)."""
    s, down = model.latent_stride, model.downsampling
    return len(tiles_of((-(-size[0] // down) * down // s, -(-size[1] // down) * down // s), version))
