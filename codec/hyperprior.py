"""A mean-scale hyperprior in exact integers, for any latent coded with one: the pixel codec's and
the semantic layer's. z is coded against the EntropyBottleneck's frozen integer CDFs; ``h_s`` runs
in fixed-point integers (:class:`IntegerHyperSynthesis`, Balle et al. 2019), so both ends derive the
same means and stds bit for bit on any machine, thread count or BLAS.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from semcodec.codec import entropy
from semcodec.errors import WeightsError
from semcodec.models.integer_hyper import IntegerHyperSynthesis


class HyperpriorTables:
    """Integer tables of a mean-scale hyperprior (an ``entropy_bottleneck``, a ``gaussian_conditional``
    and an ``h_s`` of Conv/ConvTranspose/LeakyReLU), read once: z CDFs, offsets, medians, the y std
    bounds and the integer twin of ``h_s``. Shared by the pixel codec and the semantic layer."""

    def __init__(self, model: torch.nn.Module):
        eb = model.entropy_bottleneck
        if eb.quantized_cdf.numel() == 0:
            raise WeightsError("model weights lack frozen entropy tables (run update() before saving)")
        self.cdf_length = eb.cdf_length.numpy().astype(np.int64)
        self.offset = eb.offset.numpy().astype(np.int64)
        self.pmfs = entropy.pmfs_from_cdfs(eb.quantized_cdf.numpy(), self.cdf_length)
        self.medians = model.z_medians().detach().reshape(-1).numpy().astype(np.float32)
        # y is coded with the fixed-point scale itself, bounded to the model's scale table range
        # (format version 1 rounded it up to the 64-entry table, as CompressAI does)
        self.scale_ceiling = float(model.gaussian_conditional.scale_table.max())
        self.scale_table = model.gaussian_conditional.scale_table.numpy().astype(np.float64)
        self.h_s = IntegerHyperSynthesis(model.h_s).eval()
        self.one = float(2**self.h_s.frac_bits)
        # medians on the same fixed-point grid: z_hat = symbol + offset + median, exactly
        self.medians_fixed = np.round(self.medians.astype(np.float64) * self.one)
        self.scale_floor = float(model.gaussian_conditional.lower_bound_scale.bound)


def z_symbols(z: Tensor, tables: HyperpriorTables) -> np.ndarray:
    """``round(z - median) - offset`` per channel, clamped into the channel's CDF table."""
    c = z.shape[1]
    values = torch.round(z[0].reshape(c, -1) - torch.from_numpy(tables.medians)[:, None]).to(torch.int64)
    symbols = values.numpy() - tables.offset[:, None]
    return np.clip(symbols, 0, (tables.cdf_length - 3)[:, None]).astype(np.int32)


def hyper_fixed(tables: HyperpriorTables, symbols: np.ndarray, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``h_s(z_hat)`` as fixed-point ``(means, scales)``, exact integers (see
    IntegerHyperSynthesis): identical bits at both ends on any machine, thread count or BLAS."""
    values = (symbols.astype(np.int64) + tables.offset[:, None]) * tables.one + tables.medians_fixed[:, None]
    with torch.inference_mode():
        out = tables.h_s(torch.from_numpy(values).reshape(shape))
    # held as float32: every value is an integer within +-2**20 (the activation clamp), exact in float32,
    # and a large image's (2 C, h, w) parameters then take half the memory
    means_fixed, scales_fixed = out.float().chunk(2, dim=1)
    return means_fixed, scales_fixed


def entropy_parameters(
    tables: HyperpriorTables, means_fixed: Tensor, scales_fixed: Tensor, scale_table: bool = False
) -> tuple[Tensor, np.ndarray]:
    """Float means (1, C, h, w) and coding stds (C, h*w) from fixed-point means and scales.

    Every step is exact (a power-of-two division, float comparisons), so both ends get the same
    float64 stds bit for bit; the coder needs nothing coarser. ``scale_table`` rounds each std up
    to the model's scale table (CompressAI's ``build_indexes``), as format version 1 files did.
    """
    means = (means_fixed / tables.one).float()  # |mean| < 2**9 with 12 fraction bits: exact in float32
    scales = (scales_fixed[0].double() / tables.one).reshape(scales_fixed.shape[1], -1).numpy()
    stds = np.clip(scales, tables.scale_floor, tables.scale_ceiling)
    if scale_table:
        stds = tables.scale_table[np.searchsorted(tables.scale_table[:-1], stds, side="left")]
    return means, stds


def residuals(y: Tensor, means: Tensor) -> np.ndarray:
    """``round(y - mean)`` clamped to the symbol bound, as (channels, positions) int32."""
    symbols = torch.clamp(torch.round(y - means), -entropy.SYMBOL_BOUND, entropy.SYMBOL_BOUND)
    return symbols.to(torch.int32)[0].reshape(means.shape[1], -1).numpy()
