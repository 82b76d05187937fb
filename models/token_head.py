"""Token heads: decoded latent grid -> a vision tower's tokens (N x D), without decoding pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn


class TokenHead(nn.Module):
    """Map ``y_hat`` (B, C, h, w) to tokens (B, gh*gw, D) on a target ``grid = (gh, gw)``.

    The latent grid is resampled to the target grid (area averaging when shrinking, bilinear when
    growing), then a per-token MLP, a depthwise 3x3 convolution (local context and position, as in
    CPVT), ``depth`` timm ViT blocks, and a projection to the target width. The projection predicts
    *standardised* targets; ``target_mean`` / ``target_std`` (per channel, measured on the
    distillation data) put the tower's scale back, so the loss is not dominated by a few loud
    channels and the head need not learn the tower's offsets from scratch.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        grid: tuple[int, int],
        hidden: int = 384,
        num_heads: int = 6,
        depth: int = 1,
        stem: nn.Module | None = None,
        stem_dim: int | None = None,
    ):
        super().__init__()
        self.grid = tuple(grid)
        self.stem = stem  # e.g. a copy of the codec's synthesis token stage, fine-tuned
        in_dim = stem_dim if stem is not None else in_dim
        self.norm = nn.LayerNorm(in_dim)
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.local = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.blocks = nn.Sequential(*(Block(hidden, num_heads, mlp_ratio=2.0, qkv_bias=True) for _ in range(depth)))
        self.out = nn.Linear(hidden, out_dim)
        self.register_buffer("target_mean", torch.zeros(out_dim))
        self.register_buffer("target_std", torch.ones(out_dim))

    def standardised(self, y_hat: Tensor) -> Tensor:
        """The prediction in standardised units (what distillation compares)."""
        gh, gw = self.grid
        if self.stem is not None:
            y_hat = self.stem(y_hat)
        if y_hat.shape[2] >= gh and y_hat.shape[3] >= gw:
            grid = F.adaptive_avg_pool2d(y_hat, (gh, gw))
        else:
            grid = F.interpolate(y_hat, size=(gh, gw), mode="bilinear", align_corners=False)
        tokens = self.embed(self.norm(latent_tokens(grid)))
        tokens = tokens + latent_tokens(self.local(token_map(tokens, self.grid)))
        return self.out(self.blocks(tokens))

    def forward(self, y_hat: Tensor) -> Tensor:
        return self.standardised(y_hat) * self.target_std + self.target_mean


class SplitTokenHead(nn.Module):
    """A :class:`TokenHead` that predicts a tower's intermediate map, then the tower's own tail.

    Used when the tower offers a split point (``tower.split_dim``): the learned part stays small
    and local, the pretrained tail supplies the semantics. The tail is loaded from the user's tower
    file (sha256-checked), never shipped with the head.
    """

    def __init__(self, adapter: TokenHead, tower: nn.Module):
        super().__init__()
        self.adapter, self.tower = adapter, tower
        self.grid = tuple(tower.grid)

    def features(self, y_hat: Tensor) -> Tensor:
        """The predicted intermediate map (B, C, h, w)."""
        return token_map(self.adapter(y_hat), self.adapter.grid)

    def forward(self, y_hat: Tensor) -> Tensor:
        return self.tower.tail(self.features(y_hat))


def latent_tokens(y_hat: Tensor) -> Tensor:
    """The codec's own semantic tokens: the latent grid flattened row-major to (B, h*w, C)."""
    return y_hat.flatten(2).transpose(1, 2)


def token_map(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """The inverse of :func:`latent_tokens`: (B, gh*gw, C) row-major tokens -> a (B, C, gh, gw) map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def build_head(codec_model: nn.Module, out_dim: int, grid: tuple[int, int], arch: dict) -> TokenHead:
    """The head that ``arch`` (as the registry records it) describes, for ``codec_model``'s latent."""
    arch = dict(arch)
    stem = codec_model.synthesis_token_stage() if arch.pop("synthesis_stem", False) else None
    cfg = codec_model.config
    return TokenHead(cfg.latent_channels, out_dim, grid, stem=stem, stem_dim=cfg.token_dim, **arch)
