"""Which latent tokens a pruned file (``--tokens N``) codes: one ranking for the encoder and for training.

A token the hyperprior already predicts well costs few bits and loses little when replaced by its
mean; the surprising ones carry the content. Tokens are ranked by their normalised residual energy
(``sum over channels of (round(y - mean) / std)^2``): the encoder computes it from its exact symbols
and stds (:func:`symbol_energy`), distillation and refinement from the model's float parameters
(:func:`latent_energy`); :func:`important_tokens` ranks either.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from semcodec.models import SemanticHyperprior


def important_tokens(energy: Tensor, keep: Tensor, size: tuple[int, int], stride: int) -> Tensor:
    """Per item, the ``keep[b]`` tokens of largest ``energy`` (B, h, w) -> bool mask (B, h, w).

    Only tokens over the image (``size`` at ``stride``) are kept, never the padding; ties break by
    position, so the choice is deterministic.
    """
    if int(keep.min()) < 1:
        raise ValueError("keep_tokens must be at least 1")
    rows, cols = token_extent(size, stride)
    content = torch.zeros_like(energy, dtype=torch.bool)
    content[:, :rows, :cols] = True
    order = torch.where(content, energy, -1.0).flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    return (rank < keep[:, None]).reshape(energy.shape) & content


def token_extent(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """(rows, columns) of latent tokens that cover some of an image of ``size`` at ``stride``."""
    return -(-size[0] // stride), -(-size[1] // stride)


def content_tokens(grid: tuple[int, int], size: tuple[int, int], stride: int) -> np.ndarray | None:
    """Flat bool (h*w,) of the tokens of latent ``grid`` that cover some of the image (``size`` at
    ``stride``); ``None`` when all do. The others lie wholly in the padding to the stride: their own
    pixels are cropped away, so a file (format version 3 on) does not code them and the decoder
    fills them with the mean, which its neighbours' pixels barely notice."""
    rows, cols = token_extent(size, stride)
    if rows >= grid[0] and cols >= grid[1]:
        return None
    content = np.zeros(grid, dtype=bool)
    content[:rows, :cols] = True
    return content.reshape(-1)


def symbol_energy(symbols: np.ndarray, stds: np.ndarray, grid: tuple[int, int]) -> Tensor:
    """The encoder's energy (1, h, w) from its coded symbols and stds (C, h*w)."""
    return torch.from_numpy(((symbols / stds) ** 2).sum(axis=0).reshape(1, *grid))


def latent_energy(model: SemanticHyperprior, y: Tensor, means: Tensor, scales: Tensor) -> Tensor:
    """The float twin (B, h, w) of :func:`symbol_energy`, from the model's means and scales."""
    floor = float(model.gaussian_conditional.lower_bound_scale.bound)
    return (torch.round(y - means) / scales.clamp_min(floor)).pow(2).sum(1)
