"""The channel-wise context model: trained on cached latents, coded slice by slice, exactly."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from semcodec.cli.main import main
from semcodec.codec import Codec
from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
from semcodec.models.channel_context import slice_bounds
from semcodec.training.config import TINY_ARCH
from tests.conftest import assert_exact_round_trip, synthetic_image


def test_slices_are_cut_at_the_base_layer_boundary():
    assert slice_bounds(24, 12, 5) == [(0, 5), (5, 10), (10, 12), (12, 17), (17, 22), (22, 24)]


def test_an_added_context_starts_as_the_plain_hyperprior():
    torch.manual_seed(0)
    plain = SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH)).eval()
    with_context = SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH, context_slice_channels=4)).eval()
    missing, unexpected = with_context.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("context.") for key in missing)
    y, means, scales = torch.randn(3, 1, 24, 4, 4).mul(3).unbind(0)
    torch.testing.assert_close(with_context.quantize_latent(y, means, scales), plain.quantize_latent(y, means, scales))


def test_entropy_only_training_leaves_the_transforms_alone(tiny_weights, context_weights):
    before = load_file(tiny_weights / "vit-hp-small.safetensors")
    after = load_file(context_weights / "vit-hp-small.safetensors")
    for key, value in before.items():
        if key.startswith(("g_a.", "g_s.", "log_gain", "log_inv_gain")):
            torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    assert not torch.equal(after["h_s.0.weight"], before["h_s.0.weight"])
    assert any(key.startswith("context.") for key in after)
    config = json.loads((context_weights / "registry.json").read_text())["models"]["vit-hp-small"]["config"]
    assert config["context_slice_channels"] == 4


def test_context_changes_the_entropy_parameters(context_weights):
    """Not vacuous: the trained context nets move the means the coder uses."""
    codec = Codec(context_weights)
    model, tables = codec.model("vit-hp-small")
    assert len(tables.slices) == 6 and len(tables.context) == 5
    y = torch.randn(1, 24, 4, 4) * 3
    z = model.h_a(y)
    means, scales = model.hyper_synthesis(torch.round(z - model.z_medians()) + model.z_medians())
    refined = model.quantize_latent(y, means, scales)
    assert not torch.equal(refined, torch.round(y - means) + means)


@pytest.mark.parametrize("keep_tokens", [None, 5])
def test_context_round_trip_is_exact(context_weights, keep_tokens):
    assert_exact_round_trip(Codec(context_weights), keep_tokens)


def test_context_decode_matches_the_float_model(context_weights):
    """The integer decoder rebuilds (up to fixed-point rounding) what the float model computes."""
    codec = Codec(context_weights)
    model, _ = codec.model("vit-hp-small")
    image = synthetic_image(64, 64, seed=5)
    decoded = codec.decode_symbols(codec.encode(image, 2).data)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = model.analysis(x, 1)
        z_hat = torch.round(model.h_a(y) - model.z_medians()) + model.z_medians()
        means, scales = model.hyper_synthesis(z_hat)
        y_hat = model.quantize_latent(y, means, scales)
    close = torch.isclose(decoded.y_hat, y_hat, atol=0.02).float().mean()
    assert close > 0.98


def test_rounded_rate_is_the_rate_of_the_coded_values(context_weights):
    """``entropy_forward(rate="rounded")`` charges z what compressai's coder mode charges (a batch
    as each image alone), and y what :meth:`code_latent` charges the rounded values."""
    codec = Codec(context_weights)
    model, _ = codec.model("vit-hp-small")
    torch.manual_seed(3)
    y = torch.randn(3, 24, 8, 8) * 3
    with torch.no_grad():
        out = model.entropy_forward(y, rate="rounded")
        _, z_coder = model.entropy_bottleneck(model.h_a(y), training=False)
        alone = [model.entropy_forward(y[i : i + 1], rate="rounded")["likelihoods"]["z"] for i in range(3)]
        means, scales = model.decoded_hyper(y)
        _, y_rounded = model.code_latent(y, means, scales, rate="rounded")
    torch.testing.assert_close(out["likelihoods"]["z"], z_coder)
    torch.testing.assert_close(out["likelihoods"]["z"], torch.cat(alone))
    torch.testing.assert_close(out["likelihoods"]["y"], y_rounded)


def test_resumed_training_refuses_lambdas_that_do_not_match_the_qualities(tmp_path, context_weights):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(synthetic_image(96, 120, seed=20)).save(data / "0.png")
    args = ["train", "--data", str(data), "--out", str(context_weights), "--entropy-only", "--steps", "16"]
    args += ["--crop", "64", "--lambdas", "0.0018,0.0035,0.0067,0.013"]  # a model with 2 qualities
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "has 2 qualities, not the 4 lambdas" in result.output
    small = CliRunner().invoke(main, args[:-4])  # its own lambdas, but no photo as large as the crop
    assert small.exit_code == 1 and "no training image is at least 128 px" in small.output
