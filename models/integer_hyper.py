"""The entropy-parameter path in exact integer arithmetic (Balle et al. 2019, "Integer Networks for
Data Compression with Latent-Variable Models").

A decoder must rebuild the encoder's distributions bit for bit; float convolutions differ with
thread count, BLAS and device, and a one-ulp change flips a scale-table index. Here every weight,
bias and activation of ``h_s`` is an integer on a fixed-point grid of ``2**-frac_bits``. The
products and sums are carried in float64, which represents every integer below 2**53 exactly: the
accumulators here stay below 2**46 (activations clamped to +-2**20, weights below 2**15, at most
2**11 terms per output), so *any* summation order gives the same exact integer, whatever the
library, the thread count or the device. Rescaling is an exact power-of-two division and floor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATION_LIMIT = float(2**20)


class IntegerHyperSynthesis(nn.Module):
    """Exact fixed-point copy of a trained ``h_s`` made of Conv2d, ConvTranspose2d and LeakyReLU.

    Input and output are float64 tensors holding integers: values times ``2**frac_bits``.
    """

    def __init__(self, h_s: nn.Sequential, frac_bits: int = 12):
        super().__init__()
        self.frac_bits = frac_bits
        one = float(2**frac_bits)
        self.layers: list[tuple] = []
        for i, layer in enumerate(h_s):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                weight = torch.round(layer.weight.detach().double() * one)
                bias = torch.round(layer.bias.detach().double() * one * one)
                if weight.abs().max() >= 2**15:
                    raise ValueError(f"h_s layer {i}: weights too large for the fixed-point grid")
                self.register_buffer(f"weight{i}", weight)
                self.register_buffer(f"bias{i}", bias)
                self.layers.append(("convT" if isinstance(layer, nn.ConvTranspose2d) else "conv", i, layer))
            elif isinstance(layer, nn.LeakyReLU):
                self.layers.append(("leaky", round(layer.negative_slope * one), None))
            else:
                raise TypeError(f"no integer version of {type(layer).__name__}")

    def forward_parts(self, parts: list[Tensor]) -> Tensor:
        """``forward(torch.cat(parts, dim=1))`` (parts: integers, float32 or float64) in bands of rows,
        each with a halo of the net's reach, so
        the concatenation and the activations are never made whole (a stride-1 net: the context nets).
        Exact like ``forward``: rows within the halo of a band's edge are recomputed by its neighbour."""
        convs = [layer for kind, _, layer in self.layers if kind != "leaky"]
        if any(kind == "convT" for kind, _, _ in self.layers) or any(c.stride != (1, 1) for c in convs):
            return self.forward(torch.cat(parts, dim=1).double())
        halo = sum(c.padding[0] for c in convs)
        height, width = parts[0].shape[2:]
        channels = sum(p.shape[1] for p in parts)
        rows = max(4 * halo + 1, BAND_BYTES // max(1, channels * 9 * width * 8))
        if rows >= height:
            return self.forward(torch.cat(parts, dim=1).double())
        bands = []
        for r0 in range(0, height, rows):
            r1 = min(height, r0 + rows)
            a, b = max(0, r0 - halo), min(height, r1 + halo)
            out = self.forward(torch.cat([p[:, :, a:b] for p in parts], dim=1).double())
            bands.append(out[:, :, r0 - a : r0 - a + (r1 - r0)])
        return torch.cat(bands, dim=2)

    def forward(self, x: Tensor) -> Tensor:
        inv_one = 2.0**-self.frac_bits  # multiplying by a power of two is exact
        for kind, arg, layer in self.layers:
            if kind == "leaky":  # x if x >= 0 else floor(x * slope)
                negative = x.clamp(max=0).mul_(arg * inv_one).floor_()
                x = x.clamp(min=0).add_(negative)
                continue
            weight, bias = getattr(self, f"weight{arg}"), getattr(self, f"bias{arg}")
            if kind == "conv":
                acc = banded_conv2d(x, weight, bias, layer.stride, layer.padding)
            else:
                acc = banded_conv_transpose2d(x, weight, bias, layer.stride, layer.padding, layer.output_padding)
            x = acc.mul_(inv_one).floor_().clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)
        return x


BAND_BYTES = 32 * 2**20
"""float64 convolution unfolds its input (in_channels * k * k values per output position): on a
12 MP image's 1/16 grid a context net's 3x3 layer would unfold 700 MB at once. Bands of output rows
keep each unfold near this size; the arithmetic is exact integers, so any banding gives the same bits."""


def banded_conv2d(x: Tensor, weight: Tensor, bias: Tensor, stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` computed in bands of output rows."""
    (sh, sw), (ph, pw) = stride, padding
    kh = weight.shape[2]
    per_row = weight.shape[1] * weight.shape[2] * weight.shape[3] * (x.shape[3] + 2 * pw) // sw * 8
    rows = max(1, BAND_BYTES // max(1, per_row))
    out_h = (x.shape[2] + 2 * ph - kh) // sh + 1
    if rows >= out_h:
        return F.conv2d(x, weight, bias, stride, padding)
    bands = []
    for r0 in range(0, out_h, rows):
        r1 = min(out_h, r0 + rows)
        first, last = r0 * sh - ph, (r1 - 1) * sh - ph + kh  # input rows the band reads, padding included
        band = x[:, :, max(0, first) : min(x.shape[2], last)]
        band = F.pad(band, (0, 0, max(0, -first), max(0, last - x.shape[2])))  # zero rows at the edges only
        bands.append(F.conv2d(band, weight, bias, stride, (0, pw)))
    return torch.cat(bands, dim=2)


def banded_conv_transpose2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    output_padding: tuple[int, int],
) -> Tensor:
    """``F.conv_transpose2d`` computed from bands of input rows whose outputs overlap and are added:
    exact, as every value is an integer below 2**53 in float64."""
    sh, (ph, pw) = stride[0], padding
    kh = weight.shape[2]
    per_row = weight.shape[1] * weight.shape[2] * weight.shape[3] * x.shape[3] * 8
    rows = max(1, BAND_BYTES // max(1, per_row))
    if rows >= x.shape[2]:
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
    out_h = (x.shape[2] - 1) * sh - 2 * ph + kh + output_padding[0]
    out = None
    for i0 in range(0, x.shape[2], rows):
        band = F.conv_transpose2d(x[:, :, i0 : i0 + rows], weight, None, stride, (0, pw), (0, output_padding[1]))
        if out is None:
            out = band.new_zeros(band.shape[0], band.shape[1], out_h, band.shape[3])
        top = i0 * sh - ph  # the band's first output row in the whole output
        first, last = max(0, top), min(out_h, top + band.shape[2])
        out[:, :, first:last] += band[:, :, first - top : last - top]
    return out.add_(bias.reshape(1, -1, 1, 1))
