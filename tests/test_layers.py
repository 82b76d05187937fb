"""BandedGDN and replicate_pad: the fast or compile-safe paths must compute what torch and compressai compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from compressai.layers import GDN

from semcodec.models.layers import BandedGDN


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_banded_gdn_matches_compressai(inverse: bool, channels_last: bool) -> None:
    torch.manual_seed(0)
    stock = GDN(8, inverse=inverse)
    with torch.no_grad():  # a trained-looking gamma, not the identity-like initial one
        stock.gamma.add_(0.05 * torch.rand_like(stock.gamma))
    banded = BandedGDN(8, inverse=inverse)
    banded.load_state_dict(stock.state_dict())
    banded.band_pixels = 40  # 2 rows of 23 per band, so the 7 rows end in a partial band
    x = torch.randn(2, 8, 7, 23)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = stock(x)
        got = banded(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_banded_gdn_keeps_autograd() -> None:
    """Training and encoder refinement differentiate through it: the stock forward runs there."""
    banded = BandedGDN(4, inverse=True)
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    banded(x).sum().backward()
    assert x.grad is not None and banded.beta.grad is not None


@pytest.mark.parametrize(("bottom", "right"), [(0, 3), (5, 0), (2, 7)])
def test_replicate_pad_matches_torch_replication_padding(bottom, right):
    from semcodec.models.layers import replicate_pad

    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    expected = F.pad(x, (0, right, 0, bottom), mode="replicate")
    padded = replicate_pad(x, bottom, right)
    torch.testing.assert_close(padded, expected, rtol=0, atol=0)
    weights = torch.randn_like(expected)
    (grad,) = torch.autograd.grad((padded * weights).sum(), x)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x)
    torch.testing.assert_close(grad, expected_grad)


def test_large_grids_run_their_windows_in_chunks_with_the_same_result():
    """Outside autograd a grid of more than ``whole_windows`` windows goes through each block in
    chunks (bounded memory for large photos): each window is independent, so nothing changes."""
    import torch

    from semcodec.models.layers import WindowedTransformer

    torch.manual_seed(0)
    transformer = WindowedTransformer(32, 2, 4).eval()
    x = torch.randn(1, 32, 8 * 17, 8 * 18 - 3)  # 306 windows, padded on the right
    with torch.inference_mode():
        chunked = transformer(x)
        transformer.whole_windows = 10**9
        whole = transformer(x)
    assert transformer.chunk_windows < 306 and torch.allclose(chunked, whole, rtol=0, atol=1e-6)
