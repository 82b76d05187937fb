"""Large images in bounded memory: the full-resolution convolutional stages run tile by tile.

Almost all of a large image's memory is the convolutional stem of ``g_a`` and the transposed
convolutions of ``g_s``, at full and half resolution (about 280 MB per megapixel when run whole).
Both are fully convolutional with a small receptive field (``g_a``'s stem: 33 pixels; ``g_s``'s
tail: a few latent positions), so each tile is computed with a halo of real neighbours around it,
and only the tile's own part of the output is kept: the result is the whole-image result up to
float rounding (the convolutions may sum in another order for another input size). The ViT blocks,
the hyperprior and the entropy coding run on the whole 1/16 grid, as before, so the file format
and the decoder's symbols are unchanged; images up to :data:`TILE_ABOVE_PIXELS` are coded whole,
exactly as before tiling existed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

TILE_ABOVE_PIXELS = 1024 * 1024
"""Images larger than this go through the tiled stages (conformance streams and Kodak do not)."""

TILE = 512
"""Tile side in pixels (a multiple of the latent stride, 16)."""

HALO = 64
"""Real pixels around each tile (4 latent positions): more than either stage's reach."""


def tiles(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """``(top, left, bottom, right)`` of the tiles covering ``height x width``, row by row."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, left, min(top + tile, height), min(left + tile, width)


def tile_count(height: int, width: int, tile: int = TILE) -> int:
    return -(-height // tile) * -(-width // tile)


def analysis_stem(
    stem: nn.Module,
    pixels: np.ndarray,
    padded: tuple[int, int],
    stride: int,
    progress=None,
    rows: tuple[int, int] | None = None,
) -> Tensor:
    """``stem`` (full resolution -> 1/``stride``) of the image ``pixels`` (H, W, 3 uint8), replicate-padded
    to ``padded`` (as :func:`~semcodec.codec.api.pad_to_stride` pads), one tile at a time; ``rows``
    (top, bottom; multiples of ``stride``): only that band of the padded image's rows.

    Each tile's input is gathered from the uint8 pixels with the halo (clamped indices reproduce the
    replicate padding); only (1, C, rows / stride, Wp / stride) is ever held whole."""
    h, w = pixels.shape[:2]
    hp, wp = padded
    first, last = rows or (0, hp)
    out: Tensor | None = None
    for top, left, bottom, right in tiles(last - first, wp, TILE):
        top, bottom = top + first, bottom + first
        y0, x0 = max(0, top - HALO), max(0, left - HALO)
        y1, x1 = min(hp, bottom + HALO), min(wp, right + HALO)
        region_rows = np.minimum(np.arange(y0, y1), h - 1)
        cols = np.minimum(np.arange(x0, x1), w - 1)
        region = torch.from_numpy(pixels[region_rows][:, cols]).permute(2, 0, 1)[None].float().div(255.0)
        features = stem(region)
        if out is None:
            out = features.new_empty(1, features.shape[1], (last - first) // stride, wp // stride)
        a, b = (top - y0) // stride, (left - x0) // stride
        out[:, :, (top - first) // stride : (bottom - first) // stride, left // stride : right // stride] = features[
            :, :, a : a + (bottom - top) // stride, b : b + (right - left) // stride
        ]
        if progress is not None:
            progress.update(1)
    return out


def synthesis_tail(
    tail: nn.Module,
    grid: Tensor,
    size: tuple[int, int],
    stride: int,
    progress=None,
    pixels: np.ndarray | None = None,
    grid_top: int = 0,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """``tail`` (1/``stride`` -> full resolution) of the token-stage output ``grid`` (1, C, h, w), one
    tile at a time, each written straight into the (H, W, 3) uint8 image of ``size`` (the padding
    cropped; ``pixels``: that image, else a new one). A band: ``grid`` holds the latent rows from
    ``grid_top`` on, and only latent ``rows`` (top, bottom) are drawn (with their halo from ``grid``)."""
    height, width = size
    if pixels is None:
        pixels = np.empty((height, width, 3), dtype=np.uint8)
    halo = HALO // stride
    gh, gw = grid.shape[2:]
    first, last = rows or (grid_top, grid_top + gh)
    for top, left, bottom, right in tiles(last - first, gw, TILE // stride):
        top, bottom = top + first, bottom + first  # latent rows of the whole image
        if top * stride >= height or left * stride >= width:
            continue  # all padding
        y0, x0 = max(grid_top, top - halo), max(0, left - halo)
        y1, x1 = min(grid_top + gh, bottom + halo), min(gw, right + halo)
        x_hat = tail(grid[:, :, y0 - grid_top : y1 - grid_top, x0:x1])
        a, b = (top - y0) * stride, (left - x0) * stride
        n_rows, cols = min(bottom * stride, height) - top * stride, min(right * stride, width) - left * stride
        block = x_hat[0, :, a : a + n_rows, b : b + cols].clamp(0, 1).mul(255).round().to(torch.uint8)
        y, x = top * stride, left * stride
        pixels[y : y + n_rows, x : x + cols] = block.permute(1, 2, 0).numpy()
        if progress is not None:
            progress.update(1)
    return pixels
