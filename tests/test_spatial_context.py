"""The checkerboard spatial context: gained by a trained model as the identity, coded in two exact passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from semcodec.codec import Codec
from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
from semcodec.models.spatial_context import anchor_mask
from semcodec.training.config import TINY_ARCH
from tests.conftest import assert_exact_round_trip, synthetic_image, train_further

CHANNELS = TINY_ARCH["latent_channels"]


@pytest.fixture(scope="module")
def spatial_weights(tmp_path_factory, context_weights) -> Path:
    """The tiny context model given a spatial context by `train --entropy-only --context-spatial`."""
    args = ["--entropy-only", "--context-spatial"]
    # --steps counts from the resumed model's 12: 12 steps with the spatial context
    args += ["--steps", "24", "--batch", "4", "--crop", "64", "--lr", "0.02", "--lambdas", "0.002,0.02"]
    return train_further(tmp_path_factory, context_weights, "spatial", args, (96, 120), seed=30)


def _hyper(model: SemanticHyperprior, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.decoded_hyper(y)


def test_every_non_anchor_has_anchors_on_all_four_sides():
    anchors = anchor_mask(5, 6)
    assert anchors[0, 0] and anchors.sum() == 15
    inner = ~anchors[1:-1, 1:-1]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        assert anchors[1 + dy : 4 + dy, 1 + dx : 5 + dx][inner].all()


def test_spatial_context_needs_a_channel_context():
    with pytest.raises(ValueError, match="context_slice_channels"):
        SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH, context_spatial=True))


def test_an_added_spatial_context_starts_as_before():
    torch.manual_seed(0)
    channel = SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH, context_slice_channels=4)).eval()
    spatial = SemanticHyperprior(
        SemanticHyperpriorConfig(**TINY_ARCH, context_slice_channels=4, context_spatial=True)
    ).eval()
    missing, unexpected = spatial.load_state_dict(channel.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("context.spatial.") for key in missing)
    y, means, scales = torch.randn(3, 1, CHANNELS, 6, 6).mul(3).unbind(0)
    scales = scales.abs() + 0.2
    torch.testing.assert_close(spatial.quantize_latent(y, means, scales), channel.quantize_latent(y, means, scales))
    with torch.no_grad():
        gained = spatial.code_latent(y, means, scales, "rounded")
        before = channel.code_latent(y, means, scales, "rounded")
    for a, b in zip(gained, before, strict=True):
        torch.testing.assert_close(a, b)


def test_training_records_the_spatial_context(spatial_weights):
    config = json.loads((spatial_weights / "registry.json").read_text())["models"]["vit-hp-small"]["config"]
    assert config["context_spatial"] is True and config["context_slice_channels"] == 4
    _, tables = Codec(spatial_weights).model("vit-hp-small")
    assert len(tables.spatial) == len(tables.slices) == 6


def test_spatial_context_moves_only_the_non_anchors(spatial_weights):
    """Not vacuous: the trained spatial nets change the second half's means, never the anchors'."""
    model, _ = Codec(spatial_weights).model("vit-hp-small")
    torch.manual_seed(4)
    y = torch.randn(1, CHANNELS, 8, 8) * 3
    means, scales = _hyper(model, y)
    with torch.no_grad():
        both = model.quantize_latent(y, means, scales)
        spatial, model.context.spatial = model.context.spatial, None
        try:
            channel_only = model.quantize_latent(y, means, scales)
        finally:
            model.context.spatial = spatial
    anchors = anchor_mask(8, 8)
    # anchors of the first slice see the same parameters; later slices inherit the non-anchors' changes
    torch.testing.assert_close(both[:, :4, anchors], channel_only[:, :4, anchors], rtol=0, atol=0)
    assert not torch.equal(both[:, :, ~anchors], channel_only[:, :, ~anchors])


@pytest.mark.parametrize("keep_tokens", [None, 5])
def test_spatial_round_trip_is_exact(spatial_weights, keep_tokens):
    assert_exact_round_trip(Codec(spatial_weights), keep_tokens)


def test_spatial_decode_matches_the_float_model(spatial_weights):
    """The integer two-pass decoder rebuilds (up to fixed-point rounding) what the float model computes."""
    codec = Codec(spatial_weights)
    model, _ = codec.model("vit-hp-small")
    image = synthetic_image(64, 128, seed=5)  # a multiple of the stride 64: no padding to mirror
    decoded = codec.decode_symbols(codec.encode(image, 2).data)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = model.analysis(x, 1)
        means, scales = model.decoded_hyper(y)
        y_hat = model.quantize_latent(y, means, scales)
    close = torch.isclose(decoded.y_hat, y_hat, atol=0.02).float().mean()
    assert close > 0.98
