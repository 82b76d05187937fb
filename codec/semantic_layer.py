"""The semantic layer's map <-> symbols <-> bytes: the tower's map coded at the encoder.

Same entropy coding as the pixel codec's latent: z against the frozen integer CDFs, y against exact
fixed-point means and stds from the integer twin of ``h_s`` (:mod:`semcodec.codec.latent_walk`), so
the symbols are bit for bit the same on any machine. The decoder's map (and the tower tail's
tokens after it) is float32.

A file encoded for N tokens codes only the latent positions within ``reach`` of the N kept tokens
(the latent grid is the tower's token grid); the others are the prior's means, which cost nothing.
The tower's tail mixes neighbours, so a mean in place of a neighbour moves a kept token: the encoder
then fits the coded latent so that the tail, reading what the decoder will read, gives back the
kept tokens (:class:`KeptTokensFit`; Adam on straight-through rounding, R + lambda D as for pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from compressai.ops import quantize_ste
from torch import Tensor, nn

from semcodec import bitstream
from semcodec.codec import entropy
from semcodec.codec.hyperprior import entropy_parameters, hyper_fixed, z_symbols
from semcodec.codec.latent_walk import EntropyTables, LatentWalk, Timer
from semcodec.codec.stages import decode_part, encode_part
from semcodec.errors import BitstreamError
from semcodec.models.semantic_layer import SemanticLayer

MAX_MAP_SIDE = 255
"""Largest tower map side a chunk records (one byte each): far above what any tower input gives."""


def coded_positions(token_grid: tuple[int, int], kept: tuple[int, ...] | None, reach: int) -> np.ndarray | None:
    """Flat bool mask of the latent positions a file codes: within ``reach`` (Chebyshev distance)
    of a kept token; ``None`` (every position) when every token is kept."""
    if kept is None:
        return None
    rows, cols = token_grid
    grid = np.zeros(token_grid, dtype=bool)
    grid.flat[list(kept)] = True
    near = np.zeros_like(grid)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            shifted = np.zeros_like(grid)
            shifted[max(0, dy) : rows + min(0, dy), max(0, dx) : cols + min(0, dx)] = grid[
                max(0, -dy) : rows + min(0, -dy), max(0, -dx) : cols + min(0, -dx)
            ]
            near |= shifted
    return near.reshape(-1)


@dataclass(frozen=True)
class KeptTokensFit:
    """How the encoder fits a pruned layer's coded latent: ``tail`` (the tower after its split) must
    turn the decoded map into ``target`` (the original tokens, (N, D)) at the kept tokens. Loss per
    step: the kept tokens' squared error relative to their energy + ``rate_weight`` per 1,000 bits."""

    tail: nn.Module
    target: Tensor
    steps: int = 40
    rate_weight: float = 1.0
    lr: float = 0.05


class SemanticLayerCoder:
    """Codes a tower map with one trained :class:`SemanticLayer` (``layer_id``, ``weights_hash``).

    The latent is walked along the layer's coding schedule as the pixel codec's is
    (:class:`LatentWalk`): one part for a plain hyperprior, slices and checkerboard halves for a
    layer with a context; every part goes into the one y stream of the chunk."""

    def __init__(self, layer: SemanticLayer, layer_id: str, weights_hash: bytes):
        self.layer = layer.eval()
        self.layer_id, self.weights_hash = layer_id, weights_hash
        self.tables = EntropyTables(layer)

    def encode(
        self,
        features: Tensor,
        gain_index: int,
        kept: tuple[int, ...] | None = None,
        reach: int = 0,
        version: int = bitstream.FORMAT_VERSION,
        fit: KeptTokensFit | None = None,
    ) -> bytes:
        """A semantic chunk's payload for one map (1, C, h, w); ``kept``: the token indices the
        machine gets (``None``: all); ``fit``: fit the coded latent to them (pruned files only)."""
        return self.encode_latent(features, gain_index, kept, reach, version, fit)[0]

    def encode_latent(
        self,
        features: Tensor,
        gain_index: int,
        kept: tuple[int, ...] | None = None,
        reach: int = 0,
        version: int = bitstream.FORMAT_VERSION,
        fit: KeptTokensFit | None = None,
    ) -> tuple[bytes, Tensor]:
        """:meth:`encode`, and the decoded latent ``y_hat`` (1, M, h, w) a decoder of the chunk gets
        (what a pixel model that reads the semantic layer conditions on)."""
        map_grid = _map_grid(features)
        token_grid = _half(map_grid)
        coded = coded_positions(token_grid, kept, reach)
        with torch.inference_mode():
            y = self.layer.analysis(features, gain_index)
            z_syms = z_symbols(self.layer.h_a(y), self.tables)
        hyper = self.hyper(z_syms, token_grid)
        if fit is not None and coded is not None:
            means, stds = entropy_parameters(self.tables, *hyper)
            scales = (hyper[1] / self.tables.one).float()  # what the context nets read: unbounded
            y = self._fit(fit, y, means, scales, stds, coded, kept, gain_index, map_grid)
        walk, stream = self._walk(y, hyper, coded, z_syms if bitstream.semantic_joint(version) else None)
        return self._packed(gain_index, z_syms, walk, stream, map_grid, kept, reach, version), walk.y_hat

    def _packed(
        self,
        gain_index: int,
        z_syms: np.ndarray,
        walk: LatentWalk,
        stream: entropy.GaussianEncoder,
        map_grid: tuple[int, int],
        kept: tuple[int, ...] | None,
        reach: int,
        version: int,
    ) -> bytes:
        joint = bitstream.semantic_joint(version)
        payload = bitstream.SemanticPayload(
            self.layer_id,
            self.weights_hash,
            gain_index,
            entropy.symbols_crc32(z_syms, walk.symbols),
            b"" if joint else entropy.encode_factorized(z_syms, self.tables.pmfs),
            stream.data(),
            map_grid,
            kept,
            reach if kept is not None else 0,
            joint,
        )
        return bitstream.pack_semantic(payload, version)

    def first_gain(
        self, features: Tensor, gains: tuple[int, ...], accept: Callable[[Tensor], bool], map_grid: tuple[int, int]
    ) -> int:
        """The first of ``gains`` whose rebuilt map (exactly the decoder's, cropped to ``map_grid``)
        ``accept`` takes; the last gain when none is taken. ``g_a`` runs once: gains scale its output."""
        return self._first_accepted(features, gains, accept, map_grid, False)[0]

    def encode_first_accepted(
        self,
        features: Tensor,
        gains: tuple[int, ...],
        accept: Callable[[Tensor], bool],
        version: int = bitstream.FORMAT_VERSION,
    ) -> tuple[bytes, Tensor]:
        """:meth:`encode_latent` at :meth:`first_gain`'s gain; the accepted trial's walk is the file's
        (the same symbols, one walk fewer)."""
        map_grid = _map_grid(features)
        gain, trial = self._first_accepted(features, gains, accept, map_grid, bitstream.semantic_joint(version))
        if trial is None:
            return self.encode_latent(features, gain, version=version)
        z_syms, walk, stream = trial
        return self._packed(gain, z_syms, walk, stream, map_grid, None, 0, version), walk.y_hat

    def _first_accepted(
        self,
        features: Tensor,
        gains: tuple[int, ...],
        accept: Callable[[Tensor], bool],
        map_grid: tuple[int, int],
        joint: bool,
    ) -> tuple[int, tuple | None]:
        """The accepted gain and its trial ``(z symbols, walk, stream)`` (``joint``: z opens the
        stream, format 6 on); the last gain and ``None``."""
        token_grid = _half(map_grid)
        with torch.inference_mode():
            unscaled = self.layer.g_a(self.layer.standardise(features))
            for gain in gains[:-1]:
                y = unscaled * self.layer.quality_gain(gain)
                z_syms = z_symbols(self.layer.h_a(y), self.tables)
                walk, stream = self._walk(y, self.hyper(z_syms, token_grid), None, z_syms if joint else None)
                if accept(self.rebuilt_map(walk.y_hat, gain, map_grid)):
                    return gain, (z_syms, walk, stream)
        return gains[-1], None

    def decode(self, payload: bitstream.SemanticPayload) -> Tensor:
        """The rebuilt map (1, C, h, w) of a semantic chunk."""
        y_hat = self.decoded_latent(payload)
        with torch.inference_mode():
            return self.rebuilt_map(y_hat, payload.gain_index, payload.map_grid)

    def decoded_latent(self, payload: bitstream.SemanticPayload) -> Tensor:
        """The decoded latent ``y_hat`` (1, M, h, w) of a semantic chunk: symbols plus exact means."""
        if not 0 <= payload.gain_index < self.layer.config.num_qualities:
            raise BitstreamError(f"corrupt bitstream: semantic layer gain index {payload.gain_index}")
        token_grid = payload.token_grid
        z_grid = _half(token_grid)
        stream = entropy.GaussianDecoder(payload.y)
        if payload.joint:
            z_syms = stream.decode_factorized(self.tables.pmfs, z_grid[0] * z_grid[1])
        else:
            z_syms = entropy.decode_factorized(payload.z, self.tables.pmfs, z_grid[0] * z_grid[1])
        coded = coded_positions(token_grid, payload.kept, payload.reach)
        walk = LatentWalk(self.tables, *self.hyper(z_syms, token_grid), Timer())
        with torch.inference_mode():
            for part in walk.parts():
                walk.give(decode_part(part, stream, coded, walk.timer))
        if entropy.symbols_crc32(z_syms, walk.symbols) != payload.crc:
            raise BitstreamError(
                "decoded semantic-layer symbols fail their CRC: the file is corrupt or the semantic layer "
                "here differs from the encoder's"
            )
        return walk.y_hat

    def rebuilt_map(self, y_hat: Tensor, gain_index: int, map_grid: tuple[int, int]) -> Tensor:
        """The decoder's map from its decoded latent ``y_hat``: one definition for the decoder and
        for an encoder judging what the decoder will see."""
        return self.layer.synthesis(y_hat, gain_index, map_grid)

    def _walk(
        self, y: Tensor, hyper: tuple[Tensor, Tensor], coded: np.ndarray | None, z_syms: np.ndarray | None = None
    ) -> tuple[LatentWalk, entropy.GaussianEncoder]:
        """``y`` coded along the schedule from the hyperprior's fixed-point ``(means, scales)``
        (:meth:`hyper`): the walk (symbols, the decoder's ``y_hat``) and its stream, which ``z_syms``
        open when given (one stream for the chunk, format 6 on)."""
        stream = entropy.GaussianEncoder()
        if z_syms is not None:
            stream.encode_factorized(z_syms, self.tables.pmfs)
        walk = LatentWalk(self.tables, *hyper, Timer())
        with torch.inference_mode():
            for part in walk.parts():
                walk.give(encode_part(part, y, stream, coded, walk.timer))
        return walk, stream

    def _fit(
        self,
        fit: KeptTokensFit,
        y: Tensor,
        means: Tensor,
        scales: Tensor,
        stds: np.ndarray,
        coded: np.ndarray,
        kept: tuple[int, ...],
        gain_index: int,
        map_grid: tuple[int, int],
    ) -> Tensor:
        """``y`` refined so the decoder's map, through ``fit.tail``, gives back the kept tokens; with a
        context, through the layer's float pass along its schedule (the means the decoder derives)."""
        grid = means.shape[2:]
        where = torch.from_numpy(coded).reshape(1, 1, *grid)
        index = torch.tensor(kept)
        target = fit.target[index]
        energy = target.pow(2).mean()
        bins = torch.distributions.Normal(0.0, torch.from_numpy(stds).float().reshape(1, -1, *grid))
        means, y = means.clone(), y.clone().requires_grad_(True)  # ordinary tensors: autograd
        optimiser = torch.optim.Adam([y], lr=fit.lr)
        with torch.enable_grad():
            for _ in range(fit.steps):
                if self.layer.context is None:
                    residual = quantize_ste(y - means)
                    y_hat = torch.where(where, residual + means, means)
                    likelihood = (bins.cdf(residual + 0.5) - bins.cdf(residual - 0.5)).clamp_min(1e-9)
                    bits = -(torch.log2(likelihood) * where).sum()
                else:  # the decoder's means come from the context: the uncoded positions hold those
                    y_hat, likelihood = self.layer.code_latent(y, means, scales, rate="rounded", keep=where)
                    bits = -torch.log2(likelihood).sum()
                tokens = fit.tail(self.layer.synthesis(y_hat, gain_index, map_grid))[0][index]
                loss = (tokens - target).pow(2).mean() / energy + fit.rate_weight * bits / 1000
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        return y.detach()

    def hyper(self, z_syms: np.ndarray, token_grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Fixed-point means and scales of the hyperprior on the latent grid (``h_s`` overshoots an odd
        grid by one), exact at both ends."""
        rows, cols = token_grid
        z_shape = (1, self.layer.config.hyper_channels, *_half(token_grid))
        means_fixed, scales_fixed = hyper_fixed(self.tables, z_syms, z_shape)
        return means_fixed[:, :, :rows, :cols], scales_fixed[:, :, :rows, :cols].contiguous()


def _map_grid(features: Tensor) -> tuple[int, int]:
    """The (h, w) of a tower map a chunk can record (one byte a side), or a clear refusal."""
    map_grid = tuple(features.shape[2:])
    if max(map_grid) > MAX_MAP_SIDE:
        raise ValueError(f"tower map {map_grid} above {MAX_MAP_SIDE} per side")
    return map_grid


def _half(grid: tuple[int, ...]) -> tuple[int, int]:
    """A grid after one stride-2 stage (odd sides round up)."""
    return -(-grid[0] // 2), -(-grid[1] // 2)
