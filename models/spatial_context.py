"""Checkerboard spatial context inside each channel slice (He et al. 2021; ELIC, He et al. 2022).

The channel-wise context predicts a slice from the slices before it; it cannot see the slice's own
neighbours. Here each slice is coded in two halves of a checkerboard: the *anchors* first, with the
parameters the channel context gives, then the *non-anchors*, whose mean and scale a small network
refines from the decoded anchors around them (every non-anchor's four direct neighbours are
anchors). Two passes per slice instead of one serial pass per token, so decoding stays parallel.
This is "token reasoning as context modelling" across the grid: a token is predicted from its
already-decoded neighbours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semcodec.models.layers import zero_start_refiner
from semcodec.schedule import CodingSchedule

anchor_mask = CodingSchedule.anchors
"""``(height, width)`` bool: the checkerboard half coded first (the coding schedule's)."""


class SpatialContext(nn.Module):
    """Per-slice refinement of the non-anchor ``(means, scales)`` from the slice's decoded anchors.

    Slice ``k``'s network sees the slice's channel-context means and scales and its decoded anchors
    (zero at non-anchor positions), and adds ``(d_mean, d_scale)`` at the non-anchors only. The last
    layer starts at zero, so a model that gains it starts out exactly as before. Convolutions and
    LeakyReLU only: the codec runs each network in exact fixed-point integers.
    """

    def __init__(self, bounds: list[tuple[int, int]], hidden: int = 64):
        super().__init__()
        self.nets = nn.ModuleList()
        for start, end in bounds:
            width = end - start
            self.nets.append(zero_start_refiner(3 * width, hidden, 2 * width))

    def refine(self, index: int, means: Tensor, scales: Tensor, decoded: Tensor) -> tuple[Tensor, Tensor]:
        """Slice ``index``'s final ``(means, scales)``; ``decoded``: the slice's ``y_hat`` (only its
        anchors are read). Anchors keep the parameters they were coded with."""
        anchors = anchor_mask(means.shape[2], means.shape[3], means.device)
        visible = torch.where(anchors, decoded, torch.zeros((), dtype=decoded.dtype, device=decoded.device))
        d_mean, d_scale = self.nets[index](torch.cat([means, scales, visible], dim=1)).chunk(2, dim=1)
        return torch.where(anchors, means, means + d_mean), torch.where(anchors, scales, scales + d_scale)
