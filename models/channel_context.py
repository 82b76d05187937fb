"""Channel-wise context model: each slice of latent channels is predicted from the slices coded before it.

Minnen & Singh 2020 ("Channel-wise autoregressive entropy models"): the hyperprior gives every
element a mean and a scale; a small network per slice refines them from the already-decoded
slices. The refinement runs on the latent grid only (1/16 resolution), a handful of steps per
image, so decoding stays fast. Slices never straddle the base/enhancement boundary and the base
layer comes first, so base slices see only base slices: the tokens target still reads the base
layer alone. This is "token reasoning as context modelling": later channels of a token are
predicted from its earlier channels and its neighbours'.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semcodec.models.layers import zero_start_refiner
from semcodec.models.spatial_context import SpatialContext


def slice_bounds(latent_channels: int, base_channels: int, slice_channels: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering the channels, cut at the base/enhancement boundary."""
    if slice_channels < 1:
        raise ValueError("slice_channels must be at least 1")
    bounds = []
    for first, last in ((0, base_channels), (base_channels, latent_channels)):
        bounds += [(a, min(a + slice_channels, last)) for a in range(first, last, slice_channels)]
    return bounds


class ChannelContext(nn.Module):
    """Per-slice residual refinement of the hyperprior's ``(means, scales)``.

    Slice ``k``'s network sees the hyperprior's means and scales for its own channels and the
    decoded ``y_hat`` of every earlier slice, and adds ``(d_mean, d_scale)``. The last layer
    starts at zero, so a model that gains a context starts out exactly as the plain hyperprior.
    Only convolutions and LeakyReLU: the codec runs each network in exact fixed-point integers.
    ``spatial``: each slice is also coded in two checkerboard halves (:class:`SpatialContext`).
    """

    def __init__(
        self, latent_channels: int, base_channels: int, slice_channels: int, hidden: int = 64, spatial: bool = False
    ):
        super().__init__()
        self.bounds = slice_bounds(latent_channels, base_channels, slice_channels)
        self.nets = nn.ModuleList()
        for start, end in self.bounds[1:]:
            width = end - start
            self.nets.append(zero_start_refiner(2 * width + start, hidden, 2 * width))
        self.spatial = SpatialContext(self.bounds, hidden) if spatial else None

    def refine(self, index: int, means: Tensor, scales: Tensor, decoded: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Slice ``index``'s ``(means, scales)``; ``decoded``: ``y_hat`` of slices ``0..index-1``."""
        if index == 0:
            return means, scales
        d_mean, d_scale = self.nets[index - 1](torch.cat([means, scales, *decoded], dim=1)).chunk(2, dim=1)
        return means + d_mean, scales + d_scale
