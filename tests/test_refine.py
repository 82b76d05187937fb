"""Encoder-side refinement: the objective descends, the file stays an ordinary semcodec file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from semcodec.cli.main import main
from semcodec.codec.api import image_tensor, pad_to_stride
from semcodec.codec.defaults import SUGGESTED_REFINE_STEPS
from semcodec.codec.refine import RefineConfig, objective, refine_latent, token_fidelity
from semcodec.weights.towers import default_tower_file

TOWER = "efficientnet-lite0"
needs_tower = pytest.mark.skipif(default_tower_file(TOWER) is None, reason="efficientnet-lite0 package not installed")


@pytest.fixture(scope="module")
def crop(kodak_image) -> np.ndarray:
    return np.ascontiguousarray(kodak_image[100:324, 200:424])


def _latent(codec, pixels: np.ndarray, quality: int):
    level = codec.registry.quality(quality)
    model, _ = codec.model(level.model)
    x = pad_to_stride(image_tensor(pixels), model.downsampling)
    with torch.no_grad():
        return model, level, x, model.analysis(x, level.gain_index)


def test_refinement_lowers_rate_plus_distortion(codec, crop):
    """At the encoder's step count: straight-through steps are noisy, a handful need not descend."""
    model, level, x, y = _latent(codec, crop[:128, :128], 2)
    config = RefineConfig(steps=SUGGESTED_REFINE_STEPS)
    _, history = refine_latent(model, x, y, level.gain_index, level.lmbda, (128, 128), config)
    assert len(history) == SUGGESTED_REFINE_STEPS + 1
    assert min(h["loss"] for h in history[1:]) < history[0]["loss"]


@needs_tower
def test_refinement_for_a_tower_brings_its_tokens_closer(codec, crop):
    """The encoder's suggested step count brings the tower's tokens measurably closer than they start.

    The first few steps are noisy and how far they get depends on the head, the codec weights and the
    thread count, so the bound is on the best step of the suggested count, not on a given one."""
    model, level, x, y = _latent(codec, crop, 1)
    head, info = codec.token_head(level.model, TOWER)
    semantic = token_fidelity(head, codec.tower(TOWER, info.tower_sha256), x[:, :, :224, :224])
    _, history = refine_latent(
        model, x, y, level.gain_index, level.lmbda, (224, 224), RefineConfig(steps=SUGGESTED_REFINE_STEPS), semantic
    )
    assert min(h["semantic"] for h in history[1:]) < 0.97 * history[0]["semantic"]


@needs_tower
def test_semantic_term_is_a_distortion_weighed_by_lambda(codec, crop):
    """``bpp + lambda * (255^2 * MSE + weight * semantic)``: the machine's share does not fade as lambda grows."""
    model, level, x, y = _latent(codec, crop, 1)
    head, info = codec.token_head(level.model, TOWER)
    semantic = token_fidelity(head, codec.tower(TOWER, info.tower_sha256), x[:, :, :224, :224])
    with torch.no_grad():
        low, high = (
            objective(model, y, x[:, :, :224, :224], level.gain_index, lmbda, 224 * 224, semantic, 170.0)
            for lmbda in (0.002, 0.008)
        )
    assert float(low["semantic"]) > 0 and torch.allclose(low["semantic"], high["semantic"])
    distortion = float(low["loss"] - low["bpp"])
    assert distortion == pytest.approx(0.002 * (255**2 * float(low["mse"]) + 170.0 * float(low["semantic"])), rel=1e-4)
    assert float(high["loss"] - high["bpp"]) == pytest.approx(4 * distortion, rel=1e-4)


@needs_tower
def test_refined_pruned_file_decodes_its_tokens_and_pixels(codec, crop):
    # the head's tokens (no semantic layer): refinement steers the pruned latent for them
    result = codec.encode(
        crop, 1, token_space=TOWER, keep_tokens=24, refine=RefineConfig(steps=3), semantic_layer=False
    )
    assert "refine" in result.seconds
    out = codec.decode_tokens(result.data)
    assert out.metadata["kept_tokens"] == "24" and out.metadata["token_space"] == TOWER
    assert codec.decode(result.data).shape == crop.shape  # symbols pass the CRCs: an ordinary file


def test_image_above_the_refinement_limit_is_coded_unrefined_and_says_so(codec, crop):
    plain = codec.encode(crop[:64, :64], 2)
    capped = codec.encode(crop[:64, :64], 2, refine=RefineConfig(steps=3, max_pixels=64 * 63))
    assert capped.data == plain.data and capped.refined_steps == 0 and "refine" not in capped.seconds
    assert any("not refined: 64x64" in note for note in capped.warnings)
    within = codec.encode(crop[:64, :64], 2, refine=RefineConfig(steps=3, max_pixels=64 * 64))
    assert within.refined_steps == 3 and not within.warnings


def test_cli_says_when_an_image_is_too_large_to_refine(tmp_path, tiny_weights):
    """The CLI's side of the limit above (the tiny model: the message is what is tested)."""
    from PIL import Image

    from tests.conftest import synthetic_image

    Image.fromarray(synthetic_image(1025, 1024, seed=3)).save(tmp_path / "big.png")
    args = ["--weights", str(tiny_weights), "encode", str(tmp_path / "big.png"), str(tmp_path / "big.bin"), "-q", "1"]
    result = CliRunner().invoke(main, [*args, "--refine-steps", str(SUGGESTED_REFINE_STEPS)])
    assert result.exit_code == 0, result.output
    assert "warning: not refined: 1024x1025" in result.stderr and "steps" not in result.stderr
    default = CliRunner().invoke(main, [*args, "--force"])
    assert default.exit_code == 0 and "refine" not in default.stderr


def test_refinement_scores_the_padding_tokens_as_the_file_does(codec, crop, monkeypatch):
    """224x224 pads to a 16x16 token grid; the file leaves out the tokens wholly in the padding, so
    the refinement must count them as free means (its ``keep``), not spend effort and rate on them."""
    import semcodec.codec.api as api

    seen = []

    def spy(model, x, y, gain_index, lmbda, size, config, semantic=None, keep=None, progress=False, condition=None):
        seen.append(keep)
        return y, []

    monkeypatch.setattr(api, "refine_latent", spy)
    codec.encode(crop, 2, refine=RefineConfig(steps=1))
    (keep,) = seen
    assert keep.shape == (1, 1, 16, 16) and keep[0, 0, :14, :14].all() and int(keep.sum()) == 14 * 14


def test_refined_file_is_decoded_by_the_unchanged_decoder(codec, crop):
    square = np.ascontiguousarray(crop[:128, :128])  # no padding tokens: every step moves coded tokens
    plain = codec.encode(square, 2)
    refined = codec.encode(square, 2, refine=RefineConfig(steps=3))
    assert refined.data != plain.data
    pixels = codec.decode(refined.data)
    assert pixels.shape == square.shape and pixels.dtype == np.uint8


@needs_tower
def test_cli_refines_only_when_asked(tmp_path, crop):
    from PIL import Image

    Image.fromarray(crop).save(tmp_path / "in.png")
    args = ["encode", str(tmp_path / "in.png"), str(tmp_path / "out.bin"), "-q", "1"]
    result = CliRunner().invoke(main, [*args, "--token-space", TOWER, "--refine-steps", "2"])
    assert result.exit_code == 0, result.output
    assert "refined 2 steps" in result.output
    small = tmp_path / "small.png"
    Image.fromarray(crop[:64, :64]).save(small)
    args = ["encode", str(small), str(tmp_path / "small.bin"), "-q", "1", "--force"]
    default = CliRunner().invoke(main, [*args, "--token-space", TOWER])
    assert default.exit_code == 0 and "refined" not in default.output
    latent = CliRunner().invoke(main, [*args, "--token-space", "semcodec-latent"])
    assert latent.exit_code == 0 and "refined" not in latent.output
    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 0 and "refined" not in plain.output
    bad = CliRunner().invoke(main, [*args, "--refine-steps", "-1", "--force"])
    assert bad.exit_code != 0 and "refine-steps" in bad.output


@needs_tower
def test_refinement_after_a_decode_in_inference_mode(crop):
    """Modules first loaded by a decoder (inside inference mode) still serve a refining encoder."""
    from semcodec.codec import Codec

    fresh = Codec()  # the head's tokens (no semantic layer): decoding loads the head and the tower
    data = fresh.encode(crop, 1, token_space=TOWER, semantic_layer=False).data
    with torch.inference_mode():
        fresh.decode_tokens(data)
    refined = fresh.encode(crop, 1, token_space=TOWER, refine=RefineConfig(steps=1), semantic_layer=False)
    assert fresh.decode_tokens(refined.data).tokens.shape == (49, 1280)


@needs_tower
def test_batch_encodes_for_a_token_space(tmp_path, crop):
    from PIL import Image

    from semcodec.codec import Codec

    (tmp_path / "src").mkdir()
    for i in range(2):
        Image.fromarray(np.ascontiguousarray(np.rot90(crop, i))).save(tmp_path / "src" / f"{i}.png")
    args = ["batch", "encode", str(tmp_path / "src"), str(tmp_path / "out"), "-q", "1", "--workers", "1"]
    result = CliRunner().invoke(main, [*args, "--token-space", TOWER, "--refine-steps", "1"])
    assert result.exit_code == 0, result.output
    for i in range(2):
        out = Codec().decode_tokens((tmp_path / "out" / f"{i}.png.smc").read_bytes())
        assert out.metadata["token_space"] == TOWER


@needs_tower
def test_api_cli_and_batch_write_the_same_file(tmp_path, codec, crop):
    """One encoder default (no refinement) for all three: same image and settings, same bytes."""
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(crop[:64, :64]).save(src / "a.png")
    settings = ["-q", "1", "--token-space", TOWER]
    api = codec.encode(crop[:64, :64], 1, token_space=TOWER).data
    cli = CliRunner().invoke(main, ["encode", str(src / "a.png"), str(tmp_path / "a.smc"), *settings])
    assert cli.exit_code == 0, cli.output
    batch = CliRunner().invoke(main, ["batch", "encode", str(src), str(tmp_path / "out"), *settings])
    assert batch.exit_code == 0, batch.output
    assert (tmp_path / "a.smc").read_bytes() == api == (tmp_path / "out" / "a.png.smc").read_bytes()
    from semcodec import bitstream

    assert bitstream.SEMANTIC_CHUNK in [c.tag for c in bitstream.unpack(api).chunks]  # the shipped layer


def test_effort_levels_are_refinement_and_agree_across_api_cli_and_batch(tmp_path, codec, crop):
    """`--effort 1` is the refinement of that level: the same bytes from the CLI, batch and both
    API forms, and one knob at a time (refinement keeps the best point seen: on a small crop that may
    be the unrefined one, so the bytes need not differ from effort 0's)."""
    from PIL import Image

    import semcodec
    from semcodec.codec.defaults import EFFORT_REFINE_STEPS

    image = np.ascontiguousarray(crop[:64, :64])
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(image).save(src / "a.png")
    api = codec.encode(image, 1, effort=1)
    assert api.refined_steps == EFFORT_REFINE_STEPS[1] > 0
    assert api.data == codec.encode(image, 1, refine=RefineConfig(steps=EFFORT_REFINE_STEPS[1])).data
    assert api.data == semcodec.encode(image, 1, effort=1)
    cli = CliRunner().invoke(main, ["encode", str(src / "a.png"), str(tmp_path / "a.smc"), "-q", "1", "--effort", "1"])
    assert cli.exit_code == 0 and f"refined {EFFORT_REFINE_STEPS[1]} steps" in cli.output
    batch = CliRunner().invoke(main, ["batch", "encode", str(src), str(tmp_path / "out"), "-q", "1", "--effort", "1"])
    assert batch.exit_code == 0, batch.output
    assert (tmp_path / "a.smc").read_bytes() == api.data == (tmp_path / "out" / "a.png.smc").read_bytes()
    both = CliRunner().invoke(
        main, ["encode", str(src / "a.png"), str(tmp_path / "b.smc"), "--effort", "1", "--refine-steps", "3"]
    )
    assert both.exit_code != 0 and "give one" in both.output and not (tmp_path / "b.smc").exists()
    beyond = CliRunner().invoke(main, ["encode", str(src / "a.png"), str(tmp_path / "b.smc"), "--effort", "9"])
    assert beyond.exit_code != 0 and "--effort" in beyond.output
    with pytest.raises(ValueError, match="not both"):
        codec.encode(image, 1, effort=1, refine=RefineConfig(steps=2))
    with pytest.raises(ValueError, match="effort 9"):
        codec.encode(image, 1, effort=9)
