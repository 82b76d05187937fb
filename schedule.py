"""The order the latent is coded in: one object the encoder, the decoder and the float training path read.

Channels are cut into slices (never across the base/enhancement boundary); each slice is coded after
the slices before it, and with a checkerboard (spatial) context in two halves: the anchors, where
``(row + column)`` is even, then the rest, predicted from the decoded anchors. A tokens decoder reads
only the base slices; the enhancement channels are then the hyperprior's means.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Slice:
    index: int
    start: int
    end: int


@dataclass(frozen=True)
class CodingSchedule:
    slices: tuple[tuple[int, int], ...]
    base_channels: int
    checkerboard: bool

    def coded(self, base_only: bool = False) -> Iterator[Slice]:
        """The slices in coding order; ``base_only``: the base layer's alone."""
        for index, (start, end) in enumerate(self.slices):
            if base_only and end > self.base_channels:
                return
            yield Slice(index, start, end)

    def uncoded_from(self, base_only: bool) -> int | None:
        """The first channel a ``base_only`` reader fills with the hyperprior's means (``None``: none)."""
        total = self.slices[-1][1]
        return self.base_channels if base_only and self.base_channels < total else None

    @staticmethod
    def anchors(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
        """``(height, width)`` bool: the checkerboard half coded first."""
        rows = torch.arange(height, device=device)[:, None]
        cols = torch.arange(width, device=device)[None, :]
        return (rows + cols) % 2 == 0
