"""The decoded semantic latent as the pixel entropy model's context (issue 56), in exact integers.

A file's semantic layer is decoded before its pixel layers, so a pixel model trained for it
(``semantic_channels`` in its config) may read what the machine was already sent. Both ends hold
the same integers: the layer's decoded latent is symbols plus exact fixed-point means, resampled
onto the pixel latent's grid by integer index arithmetic (nearest cell over the whole photo), and the
refiner of the hyperprior's means and scales runs as an :class:`IntegerHyperSynthesis`. The tower saw
the whole photo (its own resize), so a cell of the semantic grid covers ``photo / grid`` pixels
whatever the pixel model's padding.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from semcodec.codec.hyperprior import HyperpriorTables
from semcodec.models.semantic_hyperprior import SEMANTIC_SCALE


def on_latent_grid(latent: Tensor, photo: tuple[int, int], grid: tuple[int, int], stride: int) -> Tensor:
    """``latent`` (1, M, h, w), which covers the whole ``photo`` (height, width), resampled onto a grid
    of ``grid`` cells of ``stride`` pixels (the pixel latent, padding included): each cell takes the
    semantic cell under its centre (the last one beyond the photo)."""
    index = []
    for cells, photo_side, side in zip(grid, photo, latent.shape[2:], strict=True):
        centres = np.arange(cells, dtype=np.int64) * stride + stride // 2
        index.append(torch.from_numpy(np.minimum(side - 1, centres * side // photo_side)))
    return latent[:, :, index[0]][:, :, :, index[1]]


def semantic_fixed(latent: Tensor, tables: HyperpriorTables) -> Tensor:
    """The refiner's semantic input on the fixed-point grid: ``floor(latent * one * SEMANTIC_SCALE)``.

    ``latent`` is a decoded ``y_hat`` (symbols plus fixed-point means over ``one``): times ``one``
    it is an exact integer in float64, and the scale is a power of two, so the floor is exact too."""
    fixed = torch.round(latent.double() * tables.one)
    return torch.floor(fixed * SEMANTIC_SCALE)


def condition_fixed(refiner, means_fixed: Tensor, scales_fixed: Tensor, semantic: Tensor) -> tuple[Tensor, Tensor]:
    """Fixed-point ``(means, scales)`` refined by the integer ``refiner`` from ``semantic``
    (:func:`semantic_fixed` on y's grid): exact integers, held as float32 like :func:`hyper_fixed`'s."""
    with torch.inference_mode():
        refinement = refiner.forward_parts([means_fixed, scales_fixed, semantic])
    d_mean, d_scale = refinement.chunk(2, dim=1)
    return (means_fixed.double() + d_mean).float(), (scales_fixed.double() + d_scale).float()
