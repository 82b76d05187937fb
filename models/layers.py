"""Reusable blocks: timm ViT blocks on windows of a latent token grid; a cache-friendly GDN."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from compressai.layers import GDN
from compressai.models.base import CompressionModel
from compressai.models.utils import conv
from timm.models.vision_transformer import Block
from torch import Tensor, nn


class BandedGDN(GDN):
    """compressai's GDN (same parameters, same state dict) with a faster path outside autograd.

    The stock forward allocates four full-size maps (x**2, the norm, its root, the product): at
    half resolution of a Kodak image (96 x 256 x 384) that spent more time on a 2-core CPU than the
    transposed convolution before it. Without autograd this computes the same per-pixel formula
    in bands of rows that stay in cache, in place. Training and encoder refinement (autograd) use
    the stock forward.
    """

    band_pixels = 8192

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        channels, height, width = x.shape[-3:]
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(channels, channels, 1, 1)
        out = torch.empty_like(x)
        rows = max(1, self.band_pixels // width)
        for top in range(0, height, rows):
            band = x[..., top : top + rows, :]
            norm = F.conv2d(band * band, gamma, beta)
            norm = norm.sqrt_() if self.inverse else norm.rsqrt_()
            out[..., top : top + rows, :] = norm.mul_(band)
        return out


def gain_vector(table: Tensor, quality: Tensor | int) -> Tensor:
    """Per-channel gains ``exp(table[q])`` as (B, C, 1, 1) for quality indices ``quality`` (an int: B = 1)."""
    q = torch.as_tensor(quality, device=table.device).reshape(-1)
    return table[q].exp()[:, :, None, None]


class GainedHyperprior(CompressionModel):
    """What both coded latents share (the pixel codec's and the semantic layer's): one model for every
    quality through per-channel gain vectors (Cui et al. 2021, "Asymmetric Gained Deep Image
    Compression"), and a factorized z whose medians the hyperprior rounds around."""

    def init_gains(self, num_qualities: int, channels: int, min_gain: float, max_gain: float) -> None:
        """``log_gain`` / ``log_inv_gain`` (num_qualities, channels), log-spaced from ``min_gain`` to ``max_gain``."""
        start = torch.linspace(math.log(min_gain), math.log(max_gain), num_qualities)
        self.log_gain = nn.Parameter(start[:, None].repeat(1, channels))
        self.log_inv_gain = nn.Parameter(-start[:, None].repeat(1, channels))

    def quality_gain(self, quality: Tensor | int) -> Tensor:
        """The per-channel gain (B, C, 1, 1) the analysis applies for ``quality``."""
        return gain_vector(self.log_gain, quality)

    def inverse_gain(self, quality: Tensor | int) -> Tensor:
        """The per-channel gain (B, C, 1, 1) that undoes :meth:`quality_gain` before synthesis."""
        return gain_vector(self.log_inv_gain, quality)

    def z_medians(self) -> Tensor:
        return self.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)


def replicate_pad(x: Tensor, bottom: int, right: int) -> Tensor:
    """``F.pad(x, (0, right, 0, bottom), mode="replicate")`` by concatenation: the same values, but
    torch 2.14's inductor gets ``replication_pad2d_backward``'s strides wrong (``train --compile``
    failed on grids that are not a multiple of the window)."""
    if right:
        x = torch.cat([x, x[..., -1:].expand(*x.shape[:-1], right)], dim=3)
    if bottom:
        x = torch.cat([x, x[..., -1:, :].expand(*x.shape[:-2], bottom, x.shape[-1])], dim=2)
    return x


class WindowedTransformer(nn.Module):
    """timm ViT ``Block``s over non-overlapping ``window x window`` groups of grid tokens.

    Global attention over a 4000x3000 photo's 1/16 grid (47k tokens) would need tens of GB, so
    attention is local, as in Swin/TinyLIC (Lu et al. 2022): odd blocks shift the windows by half a
    window (a cyclic roll) so information crosses window borders. Grids that are not a multiple of
    the window are padded by replication and cropped back, which costs no bits.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window: int = 8, mlp_ratio: float = 2.0):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth))

    chunk_windows = 128
    """Outside autograd, a large grid's windows go through a block this many at a time: the MLP's
    hidden activations of a 12 MP photo's 47k tokens would take 300 MB at once. Grids of up to
    :attr:`whole_windows` windows (4 MP) run in one batch, as they always did."""
    whole_windows = 256

    def _run_block(self, block: nn.Module, windows: Tensor) -> Tensor:
        if torch.is_grad_enabled() or windows.shape[0] <= self.whole_windows:
            return block(windows)
        return torch.cat([block(chunk) for chunk in windows.split(self.chunk_windows)])

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        ws = self.window
        ph, pw = (-h) % ws, (-w) % ws
        if ph or pw:
            x = replicate_pad(x, ph, pw)
        hp, wp = h + ph, w + pw
        for i, block in enumerate(self.blocks):
            shift = ws // 2 if i % 2 else 0
            if shift:
                x = torch.roll(x, shifts=(-shift, -shift), dims=(2, 3))
            windows = x.reshape(b, c, hp // ws, ws, wp // ws, ws).permute(0, 2, 4, 3, 5, 1).reshape(-1, ws * ws, c)
            windows = self._run_block(block, windows)
            x = windows.reshape(b, hp // ws, wp // ws, ws, ws, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hp, wp)
            if shift:
                x = torch.roll(x, shifts=(shift, shift), dims=(2, 3))
        return x[:, :, :h, :w]


def start_as_identity(block: Block) -> Block:
    """Zero a timm ``Block``'s two residual output projections, so ``x + attn(x)`` and
    ``x + mlp(x)`` start as ``x``: a block a trained model gains without changing what it computes."""
    for layer in (block.attn.proj, block.mlp.fc2):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    return block


def zero_start_refiner(in_channels: int, hidden: int, out_channels: int, outer_kernel: int = 3) -> nn.Sequential:
    """Three convolutions with LeakyReLU whose last layer starts at zero: a context refinement that a
    trained model gains as the identity. Convolutions and LeakyReLU only, so the codec can run it in
    exact fixed-point integers (:class:`IntegerHyperSynthesis`). The middle one is 3x3;
    ``outer_kernel=1`` makes the first and last pointwise, about a ninth of the cost when the input
    and output are wide (a pixel latent's means and scales)."""
    net = nn.Sequential(
        conv(in_channels, hidden, outer_kernel, 1), nn.LeakyReLU(inplace=True),
        conv(hidden, hidden, 3, 1), nn.LeakyReLU(inplace=True),
        conv(hidden, out_channels, outer_kernel, 1),
    )  # fmt: skip
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class ParallelSum(nn.Module):
    """``sum(branch(x) for branch in branches)``: a transform stage with a side path beside it (a
    patch path next to the convolutional stem or tail). A view built on demand: the model owns the
    branches and their state-dict keys; this only shares them."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


def zero_started(layer: nn.Module) -> nn.Module:
    """``layer`` with weight and bias zeroed: a side path a trained model gains as the identity."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
