"""The semantic base layer: a vision tower's own intermediate map, coded at the encoder.

A token head that predicts a tower's map from the pixel codec's latent generalises poorly from
1,100 training photos (held-out cosine 0.4, issue 40). The encoder can instead run the tower itself
up to its split point and code that map (split computing, Matsubara et al. 2022; the survey's
"tokens chosen at the encoder"): the decoder rebuilds the map and the tower's own tail finishes the
tokens, so the bits the machine reads carry exactly what the machine computes.

The map (EfficientNet-Lite0 block 7: 80 x 14 x 14 for a 224 px square; from format 4 the photo
keeps its shape, 80 x 14 x 22 for 3:2) is standardised per channel, analysed to a latent at half its
grid with a mean-scale hyperprior (Minnen et al. 2018) and per-quality gain vectors (Cui et al.
2021), like the pixel codec, optionally with its channel-wise and checkerboard context (from
sem-lite0-b7c). ``h_s`` and the context nets are made of Conv2d, ConvTranspose2d and LeakyReLU
only, so the codec runs them in exact integers (:class:`~semcodec.models.integer_hyper.IntegerHyperSynthesis`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import Tensor, nn

from semcodec.models.channel_context import ChannelContext
from semcodec.models.scheduled_latent import ScheduledLatent

LATENT_INIT_SCALE = 20.0


@dataclass(frozen=True)
class SemanticLayerConfig:
    """Architecture hyper-parameters; stored next to the weights in the registry."""

    feature_channels: int = 80
    feature_grid: int = 14
    latent_channels: int = 128
    hyper_channels: int = 64
    hidden: int = 192
    num_qualities: int = 4
    min_gain: float = 0.5
    max_gain: float = 2.0
    context_slice_channels: int = 0
    """Channels per slice of a channel-wise context (the pixel codec's); 0: the plain hyperprior."""
    context_hidden: int = 64
    context_spatial: bool = False
    """Each slice also in two checkerboard halves, the second refined from the first."""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def latent_grid(self) -> int:
        return -(-self.feature_grid // 2)

    @property
    def hyper_grid(self) -> int:
        return -(-self.latent_grid // 2)


class SemanticLayer(ScheduledLatent):
    """Tower map (B, C, 14, 14) -> gained latent (B, M, 7, 7) -> hyperprior -> map again."""

    def __init__(self, cfg: SemanticLayerConfig):
        super().__init__()
        self.config = cfg
        c, m, nh, hd = cfg.feature_channels, cfg.latent_channels, cfg.hyper_channels, cfg.hidden
        self.register_buffer("feature_mean", torch.zeros(1, c, 1, 1))
        self.register_buffer("feature_std", torch.ones(1, c, 1, 1))
        self.g_a = nn.Sequential(
            conv(c, hd, 3, 1), nn.GELU(),
            conv(hd, hd, 3, 1), nn.GELU(),
            conv(hd, m, 3, 2),
        )  # fmt: skip
        self.g_s = nn.Sequential(
            deconv(m, hd, 3, 2), nn.GELU(),
            conv(hd, hd, 3, 1), nn.GELU(),
            conv(hd, hd, 3, 1), nn.GELU(),
            conv(hd, c, 3, 1),
        )  # fmt: skip
        self.h_a = nn.Sequential(
            conv(m, nh, 3, 1), nn.LeakyReLU(inplace=True),
            conv(nh, nh, 3, 2),
        )  # fmt: skip
        self.h_s = nn.Sequential(
            deconv(nh, nh, 3, 2), nn.LeakyReLU(inplace=True),
            conv(nh, 2 * m, 3, 1),
        )  # fmt: skip
        self.entropy_bottleneck = EntropyBottleneck(nh)
        self.gaussian_conditional = GaussianConditional(None)
        with torch.no_grad():  # start the latent at a codable scale: PyTorch's default init shrinks a
            # standardised map ~20x over three layers, and a latent that rounds to its mean everywhere
            # learns slowly (measured: map MSE still 1.06 after 220 steps)
            self.g_a[-1].weight.mul_(LATENT_INIT_SCALE)
            self.g_a[-1].bias.mul_(LATENT_INIT_SCALE)
        self.init_gains(cfg.num_qualities, m, cfg.min_gain, cfg.max_gain)
        if cfg.context_spatial and not cfg.context_slice_channels:
            raise ValueError("context_spatial needs a channel context (context_slice_channels > 0)")
        self.base_channels = m  # one layer: every slice is read by the machine
        self.context = (
            ChannelContext(m, m, cfg.context_slice_channels, cfg.context_hidden, spatial=cfg.context_spatial)
            if cfg.context_slice_channels
            else None
        )

    def standardise(self, features: Tensor) -> Tensor:
        return (features - self.feature_mean) / self.feature_std

    def unstandardise(self, standardised: Tensor) -> Tensor:
        return standardised * self.feature_std + self.feature_mean

    def analysis(self, features: Tensor, quality: int | Tensor) -> Tensor:
        """The gained latent ``y`` of a tower map."""
        return self.g_a(self.standardise(features)) * self.quality_gain(quality)

    def synthesis(self, y_hat: Tensor, quality: int | Tensor, map_grid: tuple[int, int] | None = None) -> Tensor:
        """The tower map rebuilt from the decoded latent, cropped to ``map_grid`` (default: the
        square map of :attr:`SemanticLayerConfig.feature_grid`)."""
        rows, cols = map_grid or (self.config.feature_grid, self.config.feature_grid)
        out = self.g_s(y_hat * self.inverse_gain(quality))
        return self.unstandardise(out[:, :, :rows, :cols])

    def hyper_synthesis(self, z_hat: Tensor, latent_grid: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """``(means, scales)`` of ``y`` on ``latent_grid`` (``h_s`` overshoots an odd grid by one)."""
        rows, cols = latent_grid or (self.config.latent_grid, self.config.latent_grid)
        means, scales = self.h_s(z_hat)[:, :, :rows, :cols].chunk(2, dim=1)
        return means, scales

    def forward(self, features: Tensor, quality: int | Tensor) -> dict:
        """Training pass: noisy likelihoods for the rate, straight-through rounding for the map."""
        y = self.analysis(features, quality)
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.z_medians()
        z_hat = quantize_ste(z - medians) + medians
        means, scales = self.hyper_synthesis(z_hat, tuple(y.shape[2:]))
        y_hat, y_likelihoods = self.code_latent(y, means, scales)
        return {
            "features": self.synthesis(y_hat, quality, tuple(features.shape[2:])),
            "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
        }
