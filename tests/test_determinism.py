"""Bit-exact decoding: the entropy-parameter path is exact integer arithmetic.

An independent int64 NumPy implementation of the same fixed-point network must give the very same
integers as the float64 torch path, whatever the thread count; decoded symbols and pixels do not
depend on the encoder's or decoder's thread count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from semcodec.models.integer_hyper import ACTIVATION_LIMIT, IntegerHyperSynthesis
from tests.conftest import synthetic_image


def conv_int64(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Direct convolution in int64 (x: C,H,W; w: O,C,k,k)."""
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    h_out = (xp.shape[1] - k) // stride + 1
    w_out = (xp.shape[2] - k) // stride + 1
    out = np.zeros((w.shape[0], h_out, w_out), dtype=np.int64)
    for ky in range(k):
        for kx in range(k):
            patch = xp[:, ky : ky + stride * h_out : stride, kx : kx + stride * w_out : stride]
            out += np.einsum("oc,chw->ohw", w[:, :, ky, kx], patch)
    return out


def conv_transpose_int64(x: np.ndarray, w: np.ndarray, stride: int, pad: int, out_pad: int) -> np.ndarray:
    """Direct transposed convolution in int64 (x: C,H,W; w: C,O,k,k)."""
    c, h, wd = x.shape
    k = w.shape[2]
    full = np.zeros((w.shape[1], (h - 1) * stride + k + out_pad, (wd - 1) * stride + k + out_pad), dtype=np.int64)
    for ky in range(k):
        for kx in range(k):
            contrib = np.einsum("co,chw->ohw", w[:, :, ky, kx], x)
            full[:, ky : ky + stride * h : stride, kx : kx + stride * wd : stride] += contrib
    h_out = (h - 1) * stride - 2 * pad + k + out_pad
    w_out = (wd - 1) * stride - 2 * pad + k + out_pad
    return full[:, pad : pad + h_out, pad : pad + w_out]


def reference(net: IntegerHyperSynthesis, x: np.ndarray) -> np.ndarray:
    one = 2**net.frac_bits
    limit = int(ACTIVATION_LIMIT)
    for kind, arg, layer in net.layers:
        if kind == "leaky":
            x = np.where(x >= 0, x, np.floor_divide(x * arg, one))
            continue
        w = getattr(net, f"weight{arg}").numpy().astype(np.int64)
        b = getattr(net, f"bias{arg}").numpy().astype(np.int64)
        if kind == "conv":
            acc = conv_int64(x, w, layer.stride[0], layer.padding[0])
        else:
            acc = conv_transpose_int64(x, w, layer.stride[0], layer.padding[0], layer.output_padding[0])
        x = np.clip(np.floor_divide(acc + b[:, None, None], one), -limit, limit)
    return x


@pytest.fixture(scope="module")
def tables(codec):
    return codec.model(codec.registry.quality(1).model)[1]


@pytest.mark.parametrize("threads", [1, 2])
def test_integer_path_equals_an_int64_reference(tables, threads):
    rng = np.random.default_rng(threads)
    channels = tables.h_s.layers[0][2].in_channels
    z = rng.integers(-30 * 4096, 30 * 4096, size=(channels, 3, 5)).astype(np.int64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            fast = tables.h_s(torch.from_numpy(z.astype(np.float64))[None])[0].numpy()
    finally:
        torch.set_num_threads(previous)
    np.testing.assert_array_equal(fast.astype(np.int64), reference(tables.h_s, z))
    assert np.all(fast == np.round(fast))


def test_integer_network_tracks_the_float_network():
    torch.manual_seed(0)
    h_s = nn.Sequential(nn.ConvTranspose2d(8, 8, 3, 2, 1, 1), nn.LeakyReLU(), nn.Conv2d(8, 4, 3, 1, 1))
    net = IntegerHyperSynthesis(h_s)
    z = torch.round(torch.randn(1, 8, 4, 4) * 3)
    with torch.inference_mode():
        exact = net(z.double() * 4096) / 4096
        approx = h_s(z)
    assert (exact - approx.double()).abs().max() < 0.01


def _with_threads(n: int, fn):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


def test_thread_count_changes_no_bit(codec):
    image = synthetic_image(200, 264, seed=5)
    one = _with_threads(1, lambda: codec.encode(image, 2))
    two = _with_threads(2, lambda: codec.encode(image, 2))
    assert one.data == two.data
    for enc_threads, dec_threads in ((1, 2), (2, 1)):
        data = (one if enc_threads == 1 else two).data
        decoded = _with_threads(dec_threads, lambda d=data: codec.decode_symbols(d))
        np.testing.assert_array_equal(decoded.symbols.y, one.symbols.y)
    png_a = _with_threads(1, lambda: codec.decode_png(one.data))
    png_b = _with_threads(1, lambda: codec.decode_png(one.data))
    assert png_a == png_b  # repeated runs: identical PNG bytes on the same machine
