"""Split token heads: the head predicts a tower's intermediate map, the tower's own tail finishes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from semcodec.cli.main import main
from semcodec.codec import Codec
from semcodec.errors import WeightsError
from semcodec.weights.towers import default_tower_file, load_tower
from tests.conftest import synthetic_image

TOWER = "efficientnet-lite0"
pytestmark = pytest.mark.skipif(default_tower_file(TOWER) is None, reason="efficientnet-lite0 package not installed")


@pytest.fixture(scope="module")
def tower():
    return load_tower(TOWER)


@pytest.fixture(scope="module")
def split_distilled(tmp_path_factory, tiny_weights) -> Path:
    from PIL import Image

    weights = tmp_path_factory.mktemp("split") / "w"
    shutil.copytree(tiny_weights, weights)
    data = tmp_path_factory.mktemp("split-data")
    for i in range(2):
        Image.fromarray(synthetic_image(240, 260, seed=30 + i)).save(data / f"{i}.png")
    args = ["--weights", str(weights), "distill", "--tower", TOWER, "--data", str(data)]
    args += ["--steps", "2", "--batch", "2", "--hidden", "32", "--depth", "1", "--crops-per-image", "2"]
    args += ["--zoom", "0.5", "--pruned-share", "0.5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return weights


def test_split_is_exact(tower):
    """features -> tail is the tower's own forward pass, bit for bit."""
    prepared = tower.prepare(torch.rand(2, 3, 224, 224))
    whole = tower.model.extract_features(prepared).flatten(2).transpose(1, 2)
    features = tower.features(prepared)
    assert features.shape == (2, tower.split_dim, *tower.split_grid)
    assert torch.equal(tower.tail(features), whole)


def test_the_encoders_tower_is_the_same_function_and_leaves_the_decoders_alone(tower):
    """``for_encoding``: batch norms folded, channels-last maps; the same map and tokens to float
    rounding, the same answer; the tower a decoder uses keeps its own layers (conformance pins its
    tokens bit for bit)."""
    fast = tower.for_encoding()
    assert fast is not tower and fast.channels_last and not tower.channels_last
    assert isinstance(tower.model._bn0, torch.nn.BatchNorm2d) and isinstance(fast.model._bn0, torch.nn.Identity)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    images = torch.rand(2, 3, 224, 320, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        features, fast_features = (
            tower.features(tower.prepare(images, (224, 320))),
            fast.features(fast.prepare(images, (224, 320))),
        )
        assert fast_features.is_contiguous()
        torch.testing.assert_close(fast_features, features, rtol=1e-4, atol=1e-4 * features.abs().max().item())
        tokens, fast_tokens = tower.tail(features), fast.tail(features)
        torch.testing.assert_close(fast_tokens, tokens, rtol=1e-4, atol=1e-4 * tokens.abs().max().item())
        assert torch.equal(tower.classify(tokens).argmax(-1), fast.classify(fast_tokens).argmax(-1))


def test_tail_gradient_matches_finite_differences():
    """Heads are distilled (and latents refined) through the tail's gradient: it must be the true
    one. (torch 2.14.1's eval batch norm got it wrong for channels-last-strided gradients.)"""
    tower = load_tower(TOWER).double()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, tower.split_dim, *tower.split_grid, dtype=torch.float64, generator=generator)
    weights = torch.randn(1, *tower.grid, tower.dim, dtype=torch.float64, generator=generator).flatten(1, 2)

    def loss(features: torch.Tensor) -> torch.Tensor:
        return (tower.tail(features) * weights).sum()

    (grad,) = torch.autograd.grad(loss(x.requires_grad_(True)), [x])
    for _ in range(3):
        direction = torch.randn(x.shape, dtype=torch.float64, generator=generator)
        direction /= direction.norm()
        with torch.no_grad():
            numeric = (loss(x + 1e-6 * direction) - loss(x - 1e-6 * direction)) / 2e-6
        assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-9)


def test_split_head_is_registered_with_its_target(split_distilled):
    head = json.loads((split_distilled / "registry.json").read_text())["models"]["vit-hp-small"]["token_heads"][TOWER]
    assert head["split"] is True
    assert head["split_block"] == 7 and head["head_grid"] == [14, 14] and head["head_dim"] == 80
    assert head["grid"] == [7, 7] and head["dim"] == 1280 and head["steps"] == 2
    views = {"crops_per_image": 2, "zoom": [0.5, 1.0], "pruned_share": 0.5, "prune_range": [8, 144]}
    assert head["views"] == views
    assert head["tower_sha256"] == load_tower(TOWER).source_sha256


def test_codec_loads_a_tower_once_and_checks_its_hash(split_distilled):
    """Split heads and the tokens benchmark share one tower; a hash it was not loaded from is refused."""
    codec = Codec(split_distilled)
    head, info = codec.token_head("vit-hp-small", TOWER)
    assert codec.tower(TOWER) is head.tower
    assert codec.tower(TOWER, sha256=info.tower_sha256) is head.tower
    with pytest.raises(WeightsError, match="sha256"):
        codec.tower(TOWER, sha256="0" * 64)


def test_tokens_through_the_tower_tail(split_distilled, tower):
    codec = Codec(split_distilled)
    data = codec.encode(synthetic_image(100, 120), 2, token_space=TOWER).data
    out = codec.decode_tokens(data)
    assert out.tokens.shape == (49, 1280)
    assert out.metadata["token_space"] == TOWER and out.metadata["grid"] == "7x7"
    head, _ = codec.token_head("vit-hp-small", TOWER)
    assert torch.isfinite(tower.classify(out.tokens[None])).all()
    assert head.tower.source_file == default_tower_file(TOWER)


def test_tower_file_with_another_hash_is_refused(split_distilled, tmp_path):
    other = tmp_path / "lite0.pth"
    state = torch.load(default_tower_file(TOWER), map_location="cpu", weights_only=True)
    state["_fc.bias"] = state["_fc.bias"] + 1
    torch.save(state, other)
    codec = Codec(split_distilled)
    data = codec.encode(synthetic_image(64, 64), 1, token_space=TOWER).data
    with pytest.raises(WeightsError, match="sha256"):
        codec.decode_tokens(data, tower_weights=other)


def test_cli_tokens_with_a_missing_tower_file_is_one_line(split_distilled, tmp_path):
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(synthetic_image(64, 64)).save(image)
    runner = CliRunner()
    w = ["--weights", str(split_distilled)]
    assert (
        runner.invoke(main, [*w, "encode", str(image), str(tmp_path / "a.bin"), "--token-space", TOWER]).exit_code == 0
    )
    out = tmp_path / "a.safetensors"
    args = [*w, "decode", str(tmp_path / "a.bin"), "--target", "tokens", "--tower-weights", str(tmp_path / "none.pt")]
    result = runner.invoke(main, [*args, "-o", str(out)])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_head_started_from_the_synthesis_token_stage_round_trips(split_distilled, tmp_path):
    """--synthesis-stem heads carry a fine-tuned copy of g_s's token stage; decoding rebuilds it."""
    from PIL import Image

    weights = tmp_path / "w"
    shutil.copytree(split_distilled, weights)
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(synthetic_image(240, 240, seed=40)).save(data / "a.png")
    args = ["--weights", str(weights), "distill", "--tower", TOWER, "--data", str(data), "--synthesis-stem"]
    args += ["--steps", "1", "--batch", "2", "--hidden", "32", "--depth", "1", "--crops-per-image", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    info = json.loads((weights / "registry.json").read_text())["models"]["vit-hp-small"]["token_heads"][TOWER]
    assert info["arch"]["synthesis_stem"] is True and info["steps"] == 1  # a new head, not a resumed one
    codec = Codec(weights)
    out = codec.decode_tokens(codec.encode(synthetic_image(64, 80), 1, token_space=TOWER).data)
    assert out.tokens.shape == (49, 1280) and torch.isfinite(out.tokens).all()


def test_held_out_report_covers_pruned_files(split_distilled, tower):
    """A cache with pruned files (--pruned-share) is evaluated on them too, under pruned_* keys."""
    from semcodec.training.data import CropBank
    from semcodec.training.distill import build_cache, evaluate

    codec = Codec(split_distilled)
    model, _ = codec.model("vit-hp-small")
    head, _ = codec.token_head("vit-hp-small", TOWER)
    from PIL import Image

    folder = Path(split_distilled).parent / "held"
    folder.mkdir(exist_ok=True)
    Image.fromarray(synthetic_image(240, 260, seed=7)).save(folder / "a.png")
    bank = CropBank([folder / "a.png"], short_side=256, crop=224, seed=1)
    cache = build_cache(model, tower, bank, 3, [0, 1], keep_range=(20, 20))
    assert cache.pruned.shape == cache.grids.shape and not torch.equal(cache.pruned, cache.grids)
    report = evaluate(head.adapter, tower, cache)
    assert set(report) == {"cosine", "rel_mse", "agreement", "pruned_cosine", "pruned_rel_mse", "pruned_agreement"}
    assert report["pruned_cosine"] != report["cosine"]


def test_head_for_a_wider_codec_starts_from_another_models_head(split_distilled, tmp_path):
    """--warm-from copies every tensor of the other model's head whose shape fits; the input layers,
    sized by the new latent, start fresh."""
    from PIL import Image

    from semcodec.weights import load_verified

    weights = tmp_path / "w"
    shutil.copytree(split_distilled, weights)
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(synthetic_image(240, 240, seed=41)).save(data / "a.png")
    train = ["--weights", str(weights), "train", "--data", str(data), "--out", str(weights), "--tiny"]
    train += ["--model-name", "wider", "--arch", "latent_channels=40", "--steps", "1", "--batch", "1", "--crop", "64"]
    result = CliRunner().invoke(main, train)
    assert result.exit_code == 0, result.output
    args = ["--weights", str(weights), "distill", "--tower", TOWER, "--data", str(data), "--warm-from", "vit-hp-small"]
    args += ["--steps", "0", "--hidden", "32", "--depth", "1", "--crops-per-image", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    models = json.loads((weights / "registry.json").read_text())["models"]
    old, new = models["vit-hp-small"]["token_heads"][TOWER], models["wider"]["token_heads"][TOWER]
    old_state = load_verified(weights / old["file"], old["sha256"])
    new_state = load_verified(weights / new["file"], new["sha256"])
    assert new_state["embed.0.weight"].shape[1] == 40 != old_state["embed.0.weight"].shape[1]
    shared = [k for k in new_state if k in old_state and new_state[k].shape == old_state[k].shape]
    assert any(k.startswith("blocks.") for k in shared)
    assert all(torch.equal(new_state[k], old_state[k]) for k in shared)


def test_warm_start_from_a_model_without_that_head_is_one_line(split_distilled, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    from PIL import Image

    Image.fromarray(synthetic_image(240, 240, seed=42)).save(data / "a.png")
    args = ["--weights", str(split_distilled), "distill", "--tower", TOWER, "--data", str(data)]
    args += ["--warm-from", "vit-hp-small", "--steps", "0", "--hidden", "48", "--crops-per-image", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "no efficientnet-lite0 head with this architecture" in result.output
