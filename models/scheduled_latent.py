"""A latent coded along a schedule: what the pixel codec and the semantic layer share.

Both code a gained latent with a mean-scale hyperprior (:class:`GainedHyperprior`), optionally
refined by a channel-wise context (and a checkerboard inside each slice, :class:`ChannelContext`).
The float passes here (training's noisy rate, the decoder's rounding) walk the same
:class:`~semcodec.schedule.CodingSchedule` the codec's integer walk does, so one definition serves
both models. A subclass sets ``base_channels``, ``context`` (``None``: the plain hyperprior) and
``config.latent_channels``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from compressai.ops import quantize_ste
from torch import Tensor

from semcodec.models.channel_context import ChannelContext
from semcodec.models.layers import GainedHyperprior
from semcodec.schedule import CodingSchedule


class ScheduledLatent(GainedHyperprior):
    """A gained hyperprior whose latent is coded slice by slice (:attr:`schedule`)."""

    base_channels: int
    context: ChannelContext | None

    @property
    def slices(self) -> list[tuple[int, int]]:
        """Channel slices in coding order: the context model's, else the base and enhancement layers."""
        if self.context is not None:
            return self.context.bounds
        cb, m = self.base_channels, self.config.latent_channels
        return [(a, b) for a, b in ((0, cb), (cb, m)) if b > a]

    @property
    def schedule(self) -> CodingSchedule:
        """The coding order the codec's encoder and decoder and this model's float passes share."""
        spatial = self.context is not None and self.context.spatial is not None
        return CodingSchedule(tuple(self.slices), self.base_channels, spatial)

    def code_latent(
        self, y: Tensor, means: Tensor, scales: Tensor, rate: str = "noise", keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Differentiable ``(y_hat, likelihoods)``: straight-through rounding around the coder's
        (context-refined) means for ``y_hat``, slice by slice, each refined from the earlier ``y_hat``.

        ``rate="noise"`` (training): the likelihoods of ``y`` plus uniform noise. ``rate="rounded"``
        (encoder refinement of one image): the likelihoods of the rounded values the file will hold,
        their gradient passing by the straight-through estimator. ``keep`` (B, 1, h, w) bool: as in
        :meth:`quantize_latent`; skipped tokens are the means and cost nothing (likelihood 1)."""
        if rate not in ("noise", "rounded"):
            raise ValueError(f"rate must be 'noise' or 'rounded', not {rate!r}")
        conditional = self.gaussian_conditional
        decoded, likelihoods = [], []
        for part in self.schedule.coded():
            start, end = part.start, part.end
            mu, sigma = self._slice_parameters(
                part.index, means[:, start:end], scales[:, start:end], decoded, y[:, start:end], keep, quantize_ste
            )
            y_hat = quantize_ste(y[:, start:end] - mu) + mu
            if rate == "noise":
                _, likelihood = conditional(y[:, start:end], sigma, means=mu)
            else:
                likelihood = conditional._likelihood(y_hat, sigma, means=mu)
                if conditional.use_likelihood_bound:
                    likelihood = conditional.likelihood_lower_bound(likelihood)
            if keep is not None:
                y_hat, likelihood = torch.where(keep, y_hat, mu), torch.where(keep, likelihood, 1.0)
            decoded.append(y_hat)
            likelihoods.append(likelihood)
        return torch.cat(decoded, dim=1), torch.cat(likelihoods, dim=1)

    def _slice_parameters(
        self,
        index: int,
        mu: Tensor,
        sigma: Tensor,
        decoded: list[Tensor],
        y: Tensor,
        keep: Tensor | None,
        rounding: Callable[[Tensor], Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Slice ``index``'s coding ``(means, scales)``: the hyperprior's, refined by the channel
        context from the earlier slices' ``decoded`` values, then (spatial context) at the
        non-anchors from the slice's own anchors, quantized by ``rounding`` around the anchors'
        means as the coder does (skipped tokens: the mean)."""
        if self.context is None:
            return mu, sigma
        mu, sigma = self.context.refine(index, mu, sigma, decoded)
        if self.context.spatial is not None:
            anchors = rounding(y - mu) + mu
            if keep is not None:
                anchors = torch.where(keep, anchors, mu)
            mu, sigma = self.context.spatial.refine(index, mu, sigma, anchors)
        return mu, sigma

    def quantize_latent(
        self, y: Tensor, means: Tensor, scales: Tensor, base_only: bool = False, keep: Tensor | None = None
    ) -> Tensor:
        """The ``y_hat`` a decoder rebuilds (hard rounding around the coder's means, float maths).

        ``base_only``: as a tokens decoder that reads the base layer sees it, the enhancement
        channels being the hyperprior's means. ``keep`` (B, 1, h, w) bool: the tokens an encoder
        pruned to (``keep_tokens``); the others are the (refined) means, as the decoder fills them."""
        decoded: list[Tensor] = []
        schedule = self.schedule
        for part in schedule.coded(base_only):
            start, end = part.start, part.end
            mu, _ = self._slice_parameters(
                part.index, means[:, start:end], scales[:, start:end], decoded, y[:, start:end], keep, torch.round
            )
            rounded = torch.round(y[:, start:end] - mu) + mu
            decoded.append(rounded if keep is None else torch.where(keep, rounded, mu))
        uncoded = schedule.uncoded_from(base_only)
        if uncoded is not None:
            decoded.append(means[:, uncoded:])
        return torch.cat(decoded, dim=1)
