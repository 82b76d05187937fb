"""Semantic hyperprior: conv stem + windowed ViT analysis, mean-scale hyperprior, gain units."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import Tensor, nn

from semcodec.models.channel_context import ChannelContext
from semcodec.models.layers import (
    BandedGDN,
    ParallelSum,
    WindowedTransformer,
    start_as_identity,
    zero_start_refiner,
    zero_started,
)
from semcodec.models.scheduled_latent import ScheduledLatent

ANALYSIS_TRANSFORMER = 7
"""Index of the :class:`WindowedTransformer` in ``g_a`` (state-dict keys ``g_a.7.blocks.*``)."""
SYNTHESIS_TRANSFORMER = 1
"""Index of the :class:`WindowedTransformer` in ``g_s``."""
SEMANTIC_SCALE = 1 / 16
"""The semantic latent's weight as the refiner reads it: near z's range. A power of two, so the
integer path reads ``floor(fixed / 16)`` of the exact fixed-point latent."""


@dataclass(frozen=True)
class SemanticHyperpriorConfig:
    """Architecture hyper-parameters; stored next to the weights in the registry."""

    stem_channels: int = 96
    token_dim: int = 128
    latent_channels: int = 160
    hyper_channels: int = 96
    depth: int = 2
    num_heads: int = 4
    window: int = 8
    num_qualities: int = 4
    min_gain: float = 0.5
    max_gain: float = 2.0
    base_channels: int | None = None
    """Latent channels in the base layer (tokens); the rest form the enhancement layer for pixels.
    ``None``: half of ``latent_channels``."""
    context_slice_channels: int = 0
    """Channels per slice of the channel-wise context model; 0: plain hyperprior (no context)."""
    context_hidden: int = 64
    context_spatial: bool = False
    """Code each context slice in two checkerboard halves, the second refined from the first's
    decoded neighbours (:class:`SpatialContext`); needs ``context_slice_channels``."""
    analysis_extra_depth: int = 0
    """ViT blocks ``g_a`` has beyond ``depth``: encoder-only capacity (files, decoding and the
    decoder's cost stay as they are); a trained model gains them as the identity."""
    analysis_patch: bool = False
    """A linear patch embedding (ViT's own tokenizer: a 16 x 16 stride-16 convolution of the pixels)
    added to the stem's output before the ViT blocks: every pixel's value reaches the token grid
    directly, not only through the stem's 96-channel 1/8 map. Capacity for the detail high rates
    code, at about 5% of the stem's cost; a trained model gains it as the identity (zero start)."""
    synthesis_patch: bool = False
    """The decoder's counterpart: a 16 x 16 stride-16 transposed convolution of ``g_s``'s token grid
    added to the pixels its transposed convolutions draw (a learned block basis per token)."""
    semantic_channels: int = 0
    """Channels of the decoded semantic-layer latent the entropy model reads (resampled to y's grid):
    a refiner of the hyperprior's means and scales (:attr:`semantic_refiner`); 0: none. Such a model
    decodes only files that carry the semantic layer it was trained with."""
    semantic_hidden: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


class SemanticHyperprior(ScheduledLatent):
    """Learned codec whose latent ``y`` is a grid of semantic tokens at 1/16 resolution.

    * ``g_a``: convolutional stem to 1/16 (GDN, Balle et al. 2017), then timm ViT blocks on the
      token grid (TIC/TinyLIC: a conv stem before attention works better than plain patchify).
    * ``h_a``/``h_s``: mean-scale hyperprior (Minnen et al. 2018, without autoregression, so decoding
      stays parallel); ``z`` is coded with a factorized ``EntropyBottleneck`` and ``y`` with a
      ``GaussianConditional`` over a fixed scale table.
    * Gain units (:class:`GainedHyperprior`): one model serves every quality; quality ``q`` scales
      ``y`` channel-wise by ``gain[q]`` before quantization and by ``inv_gain[q]`` before synthesis.
    """

    def __init__(self, config: SemanticHyperpriorConfig | None = None):
        super().__init__()
        self.config = cfg = config or SemanticHyperpriorConfig()
        n, d, m, nh = cfg.stem_channels, cfg.token_dim, cfg.latent_channels, cfg.hyper_channels
        self.base_channels = cfg.base_channels or m // 2
        self.g_a = nn.Sequential(
            conv(3, n, 5, 2), BandedGDN(n),
            conv(n, n, 3, 2), BandedGDN(n),
            conv(n, n, 3, 2), BandedGDN(n),
            conv(n, d, 3, 2),
            WindowedTransformer(d, cfg.depth + cfg.analysis_extra_depth, cfg.num_heads, cfg.window),
            conv(d, m, 1, 1),
        )  # fmt: skip
        for block in self.g_a[ANALYSIS_TRANSFORMER].blocks[cfg.depth :]:
            start_as_identity(block)
        self.g_s = nn.Sequential(
            conv(m, d, 1, 1),
            WindowedTransformer(d, cfg.depth, cfg.num_heads, cfg.window),
            deconv(d, n, 3, 2), BandedGDN(n, inverse=True),
            deconv(n, n, 3, 2), BandedGDN(n, inverse=True),
            deconv(n, n, 3, 2), BandedGDN(n, inverse=True),
            deconv(n, 3, 5, 2),
        )  # fmt: skip
        stride = self.latent_stride
        self.analysis_patch = zero_started(nn.Conv2d(3, d, stride, stride)) if cfg.analysis_patch else None
        self.synthesis_patch = zero_started(nn.ConvTranspose2d(d, 3, stride, stride)) if cfg.synthesis_patch else None
        self.h_a = nn.Sequential(
            conv(m, nh, 3, 1), nn.LeakyReLU(inplace=True),
            conv(nh, nh, 3, 2), nn.LeakyReLU(inplace=True),
            conv(nh, nh, 3, 2),
        )  # fmt: skip
        self.h_s = nn.Sequential(
            deconv(nh, nh, 3, 2), nn.LeakyReLU(inplace=True),
            deconv(nh, nh * 3 // 2, 3, 2), nn.LeakyReLU(inplace=True),
            conv(nh * 3 // 2, 2 * m, 3, 1),
        )  # fmt: skip
        self.entropy_bottleneck = EntropyBottleneck(nh)
        self.gaussian_conditional = GaussianConditional(None)
        self.init_gains(cfg.num_qualities, m, cfg.min_gain, cfg.max_gain)
        if cfg.context_spatial and not cfg.context_slice_channels:
            raise ValueError("context_spatial needs a channel context (context_slice_channels > 0)")
        self.context = (
            ChannelContext(
                m, self.base_channels, cfg.context_slice_channels, cfg.context_hidden, spatial=cfg.context_spatial
            )
            if cfg.context_slice_channels
            else None
        )
        self.semantic_refiner = (
            zero_start_refiner(2 * m + cfg.semantic_channels, cfg.semantic_hidden, 2 * m, outer_kernel=1)
            if cfg.semantic_channels
            else None
        )

    latent_stride = 16
    """Stride of ``g_a``: one semantic token per 16 x 16 pixels."""

    @property
    def downsampling(self) -> int:
        """Total stride of ``g_a`` then ``h_a``: inputs are padded to a multiple of this."""
        return 64

    def identity_started(self, key: str, trained: dict) -> bool:
        """Whether state-dict ``key``, missing from weights trained with config ``trained``, belongs
        to a part this model starts as the identity (a context model, extra analysis blocks), so
        the trained weights may resume into it."""
        if key.startswith(("context.", "analysis_patch.", "synthesis_patch.", "semantic_refiner.")):
            return True
        depth = trained.get("depth", self.config.depth) + trained.get("analysis_extra_depth", 0)
        prefix = f"g_a.{ANALYSIS_TRANSFORMER}.blocks."
        return key.startswith(prefix) and int(key[len(prefix) :].split(".")[0]) >= depth

    def synthesis_token_stage(self) -> nn.Module:
        """A copy of ``g_s``'s stride-16 part (projection + ViT blocks) that token heads may start
        from: the decoder's own reading of the latent grid, before any pixel is made."""
        return copy.deepcopy(self.g_s[:2])

    def analysis(self, x: Tensor, quality: Tensor | int) -> Tensor:
        """``y = g_a(x) * gain[q]``: the gained semantic token grid that is quantized."""
        return self.analysis_transform(x) * self.quality_gain(quality)

    def analysis_transform(self, x: Tensor) -> Tensor:
        """``g_a(x)`` before any quality's gain (with the patch path, when the model has one)."""
        stem, tokens = self.analysis_stages()
        return tokens(stem(x))

    def synthesis(self, y_hat: Tensor, quality: Tensor | int) -> Tensor:
        tokens, tail = self.synthesis_stages()
        return tail(tokens(self.synthesis_input(y_hat, quality)))

    def analysis_stages(self) -> tuple[nn.Module, nn.Module]:
        """``g_a`` as (the convolutional stem, full resolution -> 1/16, plus the patch path; the token
        stage on the 1/16 grid): the stem is local, so large images may run it in tiles."""
        stem = self.g_a[:ANALYSIS_TRANSFORMER]
        if self.analysis_patch is not None:
            stem = ParallelSum(stem, self.analysis_patch)
        return stem, self.g_a[ANALYSIS_TRANSFORMER:]

    def synthesis_stages(self) -> tuple[nn.Module, nn.Module]:
        """``g_s`` as (the token stage on the 1/16 grid; the transposed convolutions to full
        resolution, plus the patch path): the tail is local, so large images may run it in tiles."""
        tail = self.g_s[SYNTHESIS_TRANSFORMER + 1 :]
        if self.synthesis_patch is not None:
            tail = ParallelSum(tail, self.synthesis_patch)
        return self.g_s[: SYNTHESIS_TRANSFORMER + 1], tail

    def synthesis_input(self, y_hat: Tensor, quality: Tensor | int) -> Tensor:
        """``y_hat`` with the quality's gain undone: what ``g_s`` reads."""
        return y_hat * self.inverse_gain(quality)

    def semantic_grid(self, y_hat: Tensor, quality: Tensor | int, height: int, width: int) -> Tensor:
        """The quality-independent token grid: gain undone, cropped to the image (no padding tokens)."""
        grid = self.synthesis_input(y_hat, quality)
        stride = self.latent_stride
        return grid[:, :, : -(-height // stride), : -(-width // stride)]

    def hyper_synthesis(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """``(means, scales)`` of ``y`` from the decoded side information."""
        means, scales = self.h_s(z_hat).chunk(2, dim=1)
        return means, scales

    def semantic_condition(self, means: Tensor, scales: Tensor, semantic: Tensor) -> tuple[Tensor, Tensor]:
        """The hyperprior's ``(means, scales)`` refined from the decoded semantic latent on y's grid
        (:func:`~semcodec.codec.semantic_condition.on_latent_grid`), read at :data:`SEMANTIC_SCALE`
        (its values reach a few hundred): what was already sent for the machine, reused for pixels."""
        inputs = torch.cat([means, scales, semantic * SEMANTIC_SCALE], dim=1)
        d_mean, d_scale = self.semantic_refiner(inputs).chunk(2, dim=1)
        return means + d_mean, scales + d_scale

    def decoded_hyper(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(means, scales)`` a decoder derives for latent ``y``: z hard-rounded around the
        medians, then ``h_s`` (float maths; the codec's integer path matches it up to rounding)."""
        medians = self.z_medians()
        return self.hyper_synthesis(torch.round(self.h_a(y) - medians) + medians)

    def forward(
        self,
        x: Tensor,
        quality: Tensor | int,
        transform_dtype: torch.dtype | None = None,
        semantic: Tensor | None = None,
    ) -> dict:
        """Training pass: noisy ``y``/``z`` for the rate, straight-through rounding for synthesis.

        (Mixed quantization, Minnen & Singh 2020: the decoder learns on the values it will see.)
        ``transform_dtype`` (``torch.bfloat16``): ``g_a`` and ``g_s`` run under autocast to it, 1.7x
        faster on a CPU with AVX512-BF16; the entropy model stays float32, as the rate needs its precision.
        """
        autocast = torch.autocast(x.device.type, dtype=transform_dtype, enabled=transform_dtype is not None)
        with autocast:
            y = self.analysis(x, quality)
        out = self.entropy_forward(y.float(), semantic=semantic)
        with autocast:
            x_hat = self.synthesis(out["y_hat"], quality)
        return {"x_hat": x_hat.float(), **out}

    def entropy_forward(
        self, y: Tensor, rate: str = "noise", keep: Tensor | None = None, semantic: Tensor | None = None
    ) -> dict:
        """The rate half of :meth:`forward` from gained latents ``y``: ``y_hat``, the likelihoods and
        the hyperprior's means (also the whole pass when only the entropy model trains, on cached latents).

        ``rate="noise"``: likelihoods of the noisy ``y`` and ``z`` (training's smooth proxy).
        ``rate="rounded"``: of the rounded values the file holds, what the coder charges (gradients
        pass by straight-through rounding); ``keep`` as in :meth:`code_latent`. ``semantic``: the
        decoded semantic latent on y's grid, for a model with a :attr:`semantic_refiner`."""
        z = self.h_a(y)
        medians = self.z_medians()
        z_hat = quantize_ste(z - medians) + medians
        if rate == "rounded":
            bottleneck = self.entropy_bottleneck
            per_channel = z_hat.transpose(0, 1)  # the bottleneck's (C, 1, N) layout, then back to z's
            z_likelihoods = bottleneck._likelihood(per_channel.reshape(z.shape[1], 1, -1))[0]
            if bottleneck.use_likelihood_bound:
                z_likelihoods = bottleneck.likelihood_lower_bound(z_likelihoods)
            z_likelihoods = z_likelihoods.reshape(per_channel.shape).transpose(0, 1)
        else:
            _, z_likelihoods = self.entropy_bottleneck(z)
        means, scales = self.hyper_synthesis(z_hat)
        if self.semantic_refiner is not None:
            if semantic is None:
                raise ValueError("this model reads the semantic latent: give semantic=")
            means, scales = self.semantic_condition(means, scales, semantic)
        y_hat, y_likelihoods = self.code_latent(y, means, scales, rate=rate, keep=keep)
        return {"y_hat": y_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}, "means": means}
