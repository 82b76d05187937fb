"""Token head: decoded latent grid -> token sequence (N x D) for an MLLM-facing token space."""

from __future__ import annotations

from torch import Tensor, nn


class TokenHead(nn.Module):
    """Map ``y_hat`` (B, C, H, W) to tokens (B, H*W, D) in a vision tower's token space.

    A LayerNorm and a two-layer MLP per token. Trained by distillation against a tower (issue 4);
    a codec shipped without a distilled head serves its own latent tokens instead (see
    :func:`latent_tokens`).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * out_dim
        self.norm = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, y_hat: Tensor) -> Tensor:
        return self.mlp(self.norm(latent_tokens(y_hat)))


def latent_tokens(y_hat: Tensor) -> Tensor:
    """The codec's own semantic tokens: the latent grid flattened row-major to (B, H*W, C)."""
    return y_hat.flatten(2).transpose(1, 2)
