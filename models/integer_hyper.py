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

    def forward(self, x: Tensor) -> Tensor:
        inv_one = 2.0**-self.frac_bits  # multiplying by a power of two is exact
        for kind, arg, layer in self.layers:
            if kind == "leaky":  # x if x >= 0 else floor(x * slope)
                negative = x.clamp(max=0).mul_(arg * inv_one).floor_()
                x = x.clamp(min=0).add_(negative)
                continue
            weight, bias = getattr(self, f"weight{arg}"), getattr(self, f"bias{arg}")
            if kind == "conv":
                acc = F.conv2d(x, weight, bias, layer.stride, layer.padding)
            else:
                acc = F.conv_transpose2d(x, weight, bias, layer.stride, layer.padding, layer.output_padding)
            x = acc.mul_(inv_one).floor_().clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)
        return x
