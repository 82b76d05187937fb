"""Token head: decoded latent grid -> a vision tower's tokens (N x D), without decoding pixels."""

from __future__ import annotations

import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn


class TokenHead(nn.Module):
    """Map ``y_hat`` (B, C, h, w) to tokens (B, gh*gw, D) on a tower's ``grid = (gh, gw)``.

    The latent grid is resampled to the tower grid (area averaging when shrinking, bilinear when
    growing), then a per-token MLP, one timm ViT block for context, and a projection to the tower
    width. Trained by distillation (``semcodec distill``) against the tower run on the original
    image; without a distilled head the codec serves :func:`latent_tokens` instead.
    """

    def __init__(self, in_dim: int, out_dim: int, grid: tuple[int, int], hidden: int = 384, num_heads: int = 6):
        super().__init__()
        self.grid = tuple(grid)
        self.norm = nn.LayerNorm(in_dim)
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.block = Block(hidden, num_heads, mlp_ratio=2.0, qkv_bias=True)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, y_hat: Tensor) -> Tensor:
        gh, gw = self.grid
        if y_hat.shape[2] >= gh and y_hat.shape[3] >= gw:
            grid = F.adaptive_avg_pool2d(y_hat, (gh, gw))
        else:
            grid = F.interpolate(y_hat, size=(gh, gw), mode="bilinear", align_corners=False)
        tokens = self.embed(self.norm(latent_tokens(grid)))
        return self.out(self.block(tokens))


def latent_tokens(y_hat: Tensor) -> Tensor:
    """The codec's own semantic tokens: the latent grid flattened row-major to (B, h*w, C)."""
    return y_hat.flatten(2).transpose(1, 2)
