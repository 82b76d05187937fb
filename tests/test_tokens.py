"""Tokens target: tower adapters from local files, a distilled head, token space in the bitstream."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from semcodec.cli.main import main
from semcodec.codec import Codec
from semcodec.errors import WeightsError
from semcodec.training.train import ENCODER_PARTS
from semcodec.weights import sha256_file
from semcodec.weights.towers import load_tower, register_tower_configs
from tests.conftest import synthetic_image

TINY = "open_clip:semcodec-tiny-clip"


def tiny_clip_file(path: Path, width: int | None = None) -> Path:
    import open_clip

    register_tower_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("semcodec-tiny-clip", pretrained=None)
    state = model.state_dict()
    if width is not None:  # a checkpoint of another shape
        state["visual.conv1.weight"] = torch.zeros(width, 3, 16, 16)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def tower_file(tmp_path_factory) -> Path:
    return tiny_clip_file(tmp_path_factory.mktemp("tower") / "tiny-clip.pt")


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, tiny_weights, tower_file) -> Path:
    from PIL import Image

    weights = tmp_path_factory.mktemp("distilled") / "w"
    shutil.copytree(tiny_weights, weights)
    data = tmp_path_factory.mktemp("distill-data")
    for i in range(2):
        Image.fromarray(synthetic_image(96, 120, seed=10 + i)).save(data / f"{i}.png")
    result = CliRunner().invoke(
        main,
        [
            "--weights",
            str(weights),
            "distill",
            "--tower",
            TINY,
            "--tower-weights",
            str(tower_file),
            "--data",
            str(data),
            "--steps",
            "3",
            "--batch",
            "2",
            "--hidden",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    return weights


def test_open_clip_tower_gives_penultimate_patch_tokens(tower_file):
    tower = load_tower(TINY, tower_file)
    tokens = tower(torch.rand(2, 3, 64, 64))
    assert tower.grid == (4, 4)
    assert tokens.shape == (2, 16, 32)  # 4 x 4 patches, no CLS token
    captured = []
    tower.model.transformer.resblocks[-1].register_forward_hook(lambda _m, i, _o: captured.append(i[0]))
    tokens = tower(torch.rand(1, 3, 64, 64))
    torch.testing.assert_close(tokens, captured[-1][:, 1:, :])  # input of the last block = penultimate output


def test_tower_with_wrong_hash_or_shape_is_a_clear_error(tower_file, tmp_path):
    with pytest.raises(WeightsError, match="sha256"):
        load_tower(TINY, tower_file, sha256="0" * 64)
    wrong = tiny_clip_file(tmp_path / "wide.pt", width=48)
    with pytest.raises(WeightsError, match="do not fit"):
        load_tower(TINY, wrong)
    with pytest.raises(WeightsError, match="does not exist"):
        load_tower(TINY, tmp_path / "absent.pt")


def test_distilled_head_is_registered(distilled, tower_file):
    model = json.loads((distilled / "registry.json").read_text())["models"]["vit-hp-small"]
    head = model["token_heads"][TINY]
    assert head["tower_sha256"] == sha256_file(tower_file)
    assert head["grid"] == [4, 4] and head["dim"] == 32 and head["steps"] == 3


def test_tokens_from_the_bitstream_in_the_tower_space(distilled):
    codec = Codec(distilled)
    image = synthetic_image(70, 90)
    data = codec.encode(image, 1, token_space=TINY).data
    out = codec.decode_tokens(data)
    assert out.tokens.shape == (16, 32)
    assert out.metadata["token_space"] == TINY and out.metadata["grid"] == "4x4"
    latent = codec.decode_tokens(data, token_space="semcodec-latent")
    assert latent.tokens.shape == (5 * 6, 12)  # ceil(70/16) x ceil(90/16) tokens, 12 base-layer channels
    assert codec.decode(data).shape == image.shape


def test_tower_weights_of_one_decode_do_not_stay_with_the_codec(distilled, tower_file, tmp_path):
    """``decode_tokens(tower_weights=...)`` uses that file for that call only: a shared codec (the
    module-level API's) keeps its own tower files for later calls."""
    codec = Codec(distilled, tower_files={TINY: tower_file})
    data = codec.encode(synthetic_image(70, 90), 1, token_space=TINY).data
    first = codec.decode_tokens(data, tower_weights=tiny_clip_file(tmp_path / "other.pt"))
    assert codec.tower_files == {TINY: tower_file}
    assert torch.equal(codec.decode_tokens(data).tokens, first.tokens)


def test_file_without_a_head_serves_latent_tokens(tiny_weights):
    codec = Codec(tiny_weights)
    out = codec.decode_tokens(codec.encode(synthetic_image(40, 40), 1).data)
    assert out.metadata["token_space"] == "semcodec-latent"
    assert "no distilled head" in out.metadata["tower"]


def test_head_for_other_codec_weights_is_refused(distilled, tmp_path):
    stale = tmp_path / "w"
    shutil.copytree(distilled, stale)
    raw = json.loads((stale / "registry.json").read_text())
    raw["models"]["vit-hp-small"]["token_heads"][TINY]["codec_sha256"] = "f" * 64
    (stale / "registry.json").write_text(json.dumps(raw))
    codec = Codec(stale)
    data = codec.encode(synthetic_image(40, 40), 1).data
    with pytest.raises(WeightsError, match="re-run"):
        codec.decode_tokens(data, token_space=TINY)


def test_codec_retrain_keeps_the_head_stale_until_distill_warm_starts_it(distilled, tower_file, tmp_path):
    """Retraining the codec keeps the head listed but refused; `distill` resumes from it."""
    from PIL import Image

    work = tmp_path / "w"
    shutil.copytree(distilled, work)
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(synthetic_image(96, 120, seed=4)).save(data / "a.png")
    steps = json.loads((work / "registry.json").read_text())["models"]["vit-hp-small"]["token_heads"][TINY]["steps"]
    retrain = ["train", "--data", str(data), "--out", str(work), "--entropy-only", "--steps", "8", "--batch", "2"]
    result = CliRunner().invoke(main, [*retrain, "--crop", "64", "--lambdas", "0.002,0.02"])
    assert result.exit_code == 0, result.output
    codec = Codec(work)
    data_bin = codec.encode(synthetic_image(40, 40), 1).data
    with pytest.raises(WeightsError, match="re-run"):
        codec.decode_tokens(data_bin, token_space=TINY)
    again = ["--weights", str(work), "distill", "--tower", TINY, "--tower-weights", str(tower_file)]
    result = CliRunner().invoke(main, [*again, "--data", str(data), "--steps", str(steps + 2), "--hidden", "32"])
    assert result.exit_code == 0, result.output
    assert "warm start" in result.output
    head = json.loads((work / "registry.json").read_text())["models"]["vit-hp-small"]["token_heads"][TINY]
    assert head["steps"] == steps + 2
    assert Codec(work).decode_tokens(data_bin, token_space=TINY).tokens.shape[0] > 0


def test_token_benchmark_runs_with_the_tiny_tower(distilled, tower_file, tmp_path):
    from PIL import Image

    from semcodec.bench import tokens as token_bench

    data = tmp_path / "imgs"
    data.mkdir()
    for i, name in enumerate(["n01_a.png", "n02_b.png"]):
        Image.fromarray(synthetic_image(80, 100, seed=20 + i)).save(data / name)
    result = token_bench.run(data, TINY, tower_file, distilled, qualities=[1], with_classical=True, keeps=[3])
    methods = {r["method"] for r in result["rows"]}
    assert {
        "semcodec tokens (a)",
        "semcodec pixels + tower (b)",
        "JPEG + tower at file bytes (c)",
        "JPEG + tower at token bytes (c)",
    } <= methods
    for row in result["rows"]:
        assert -1.0 <= row["cosine"] <= 1.0 and row["bytes"] > 0 and row["top1"] is None
    assert "n/a" in token_bench.table(result)
    pruned = {r["method"] for r in result["rows"] if r["tokens"] == 3}
    classical = {f"{name} + tower at token bytes (c)" for name in ("JPEG", "WebP", "AVIF")}
    assert pruned == {"semcodec tokens (a)", "semcodec pixels + tower (b)", *classical}


def _first_coded(model, height: int, width: int) -> torch.Tensor:
    """Grid positions of the first slice whose means depend on nothing coded before them."""
    if model.config.context_spatial:
        from semcodec.schedule import CodingSchedule

        return CodingSchedule.anchors(height, width)
    return torch.ones(height, width, dtype=torch.bool)


def test_distillation_prunes_the_tokens_the_encoder_prunes(codec, kodak_image):
    """Heads learn pruned files from a float twin of the encoder's token choice: it must pick (nearly)
    the tokens `encode --tokens N` codes, and keep exactly N content tokens per crop."""
    from semcodec.codec.api import pad_to_stride
    from semcodec.codec.token_choice import important_tokens, latent_energy
    from semcodec.training.distill import coded_grids

    model, _ = codec.model(codec.registry.quality(1).model)
    crop = np.ascontiguousarray(kodak_image[100:324, 200:424])
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    gain = codec.registry.quality(1).gain_index
    with torch.no_grad():
        y = model.analysis(pad_to_stride(x, model.downsampling), gain)
        medians = model.z_medians()
        means, scales = model.hyper_synthesis(torch.round(model.h_a(y) - medians) + medians)
        energy = latent_energy(model, y.repeat(2, 1, 1, 1), means, scales)
        kept = important_tokens(energy, torch.tensor([64, 5]), (224, 224), model.latent_stride)[:, None]
        full, pruned = coded_grids(model, x, [gain], torch.tensor([64]))
    assert kept.shape == (2, 1, 16, 16) and kept.flatten(1).sum(1).tolist() == [64, 5]
    assert not kept[:, :, 14:].any() and not kept[:, :, :, 14:].any()  # never the padding
    decoded = codec.decode_symbols(codec.encode(crop, 1, token_space="none", keep_tokens=64).data, base_only=True)
    mask = torch.from_numpy(decoded.mask.reshape(decoded.y_hat.shape[2:]))
    assert (mask & kept[0, 0]).sum() >= 0.9 * 64
    # in the first slice (refined from nothing coded yet; with a spatial context only its anchors)
    # kept tokens are the full file's, the others the prior's means
    same = (pruned - full)[:, :, : model.slices[0][1]].abs().amax(dim=(0, 1, 2)) == 0
    first = _first_coded(model, *same.shape)
    grid_kept = kept[0, 0, :14, :14]
    assert (grid_kept & first).any() and (~grid_kept & first).any()
    assert same[grid_kept & first].all() and not same[~grid_kept & first].all()


def test_quantize_latent_keeps_only_the_kept_tokens(codec):
    model, _ = codec.model(codec.registry.quality(1).model)
    torch.manual_seed(0)
    channels = model.config.latent_channels
    y, means = torch.randn(1, channels, 4, 4) * 3, torch.randn(1, channels, 4, 4)
    scales = torch.rand(1, channels, 4, 4) + 0.5
    with torch.no_grad():
        everything = model.quantize_latent(y, means, scales)
        all_kept = model.quantize_latent(y, means, scales, keep=torch.ones(1, 1, 4, 4, dtype=torch.bool))
        none_kept = model.quantize_latent(y, means, scales, keep=torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    assert torch.equal(everything, all_kept)
    # the first slice is refined from nothing coded yet (with a spatial context: its anchors), so
    # both share its means there: pruned tokens sit on them, kept ones an integer away
    width = model.slices[0][1]
    offset = (everything[:, :width] - none_kept[:, :width])[..., _first_coded(model, 4, 4)]
    assert torch.allclose(offset, offset.round(), atol=1e-4) and offset.abs().sum() > 0


def _joint_run(work: Path, tower_file: Path, tmp_path: Path, *extra: str) -> tuple[dict, dict]:
    """Three joint-training steps of ``work``'s vit-hp-small on two synthetic photos: its registry
    entry before and after."""
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_image(96, 120, seed=20 + i)).save(data / f"{i}.png")
    before = json.loads((work / "registry.json").read_text())["models"]["vit-hp-small"]
    steps = str(before["info"]["steps"] + 3)
    args = ["train", "--data", str(data), "--out", str(work), "--token-space", TINY, "--tower-weights", str(tower_file)]
    result = CliRunner().invoke(main, [*args, "--steps", steps, "--batch", "2", "--save-every", "100", *extra])
    assert result.exit_code == 0, result.output
    return before, json.loads((work / "registry.json").read_text())["models"]["vit-hp-small"]


def test_joint_training_trains_codec_and_head_together(distilled, tower_file, tmp_path):
    """`train --token-space`: one run updates the codec and its head, and the head it writes is the
    one for the new weights (the codec serves it at once, no `distill` needed)."""
    work = tmp_path / "w"
    shutil.copytree(distilled, work)
    before, after = _joint_run(work, tower_file, tmp_path)
    head = after["token_heads"][TINY]
    assert after["sha256"] != before["sha256"] and head["sha256"] != before["token_heads"][TINY]["sha256"]
    assert head["codec_sha256"] == after["sha256"] and "jointly" in head["trained"] and "held_out" not in head
    codec = Codec(work)
    tokens = codec.decode_tokens(codec.encode(synthetic_image(64, 64), 1, token_space=TINY).data).tokens
    assert tokens.shape[0] > 0 and torch.isfinite(tokens).all()


def test_joint_token_distortion_reads_the_base_layer_only(distilled, tower_file):
    """D_tokens is what a tokens decoder sees: the enhancement layer's symbols cannot change it, and
    its gradient reaches the analysis transform."""
    from semcodec.training.joint import base_layer_grid, load_objective, token_distortion
    from semcodec.weights import load_registry

    registry = load_registry(distilled)
    model = Codec(distilled).model("vit-hp-small")[0]
    objective = load_objective(registry, "vit-hp-small", model, TINY, 1.0, tower_file)
    size = objective.tower.input_size
    x = torch.from_numpy(synthetic_image(size, size)).permute(2, 0, 1)[None].float() / 255
    quality = torch.tensor([0])
    model.zero_grad()
    out = model(torch.nn.functional.pad(x, (0, (-size) % 64, 0, (-size) % 64), mode="replicate"), quality)
    distortion = token_distortion(objective, base_layer_grid(model, out, quality, size, size), x)["distortion"]
    distortion.sum().backward()
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith("g_a")
    )
    cb = model.base_channels
    shifted = {**out, "y_hat": torch.cat([out["y_hat"][:, :cb], out["y_hat"][:, cb:] + 5.0], dim=1)}
    with torch.no_grad():
        again = token_distortion(objective, base_layer_grid(model, shifted, quality, size, size), x)["distortion"]
    assert torch.equal(again, distortion.detach())


def test_encoder_only_joint_training_leaves_the_decoder_bit_exact(distilled, tower_file, tmp_path):
    """`train --token-space --encoder-only`: the encoder (``h_a`` too) and the head learn, every tensor
    a pixel decoder reads (synthesis, hyperprior synthesis, entropy tables) stays the starting model's."""
    from safetensors.torch import load_file

    work = tmp_path / "w"
    shutil.copytree(distilled, work)
    before_weights = load_file(work / "vit-hp-small.safetensors")
    before, after = _joint_run(work, tower_file, tmp_path, "--encoder-only")
    after_weights = load_file(work / after["file"])
    encoder = [k for k in before_weights if k.startswith(ENCODER_PARTS)]
    assert any(not torch.equal(before_weights[k], after_weights[k]) for k in encoder)
    assert any(not torch.equal(before_weights[k], after_weights[k]) for k in encoder if k.startswith("h_a."))
    assert all(torch.equal(before_weights[k], after_weights[k]) for k in before_weights if k not in encoder)
    head = after["token_heads"][TINY]
    assert head["sha256"] != before["token_heads"][TINY]["sha256"] and "encoder" in head["trained"]


def test_encoder_only_and_entropy_only_together_are_refused(tiny_weights, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    from PIL import Image

    Image.fromarray(synthetic_image(64, 64)).save(data / "0.png")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "w"), "--encoder-only", "--entropy-only"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "choose one" in result.output


def test_a_token_file_is_the_same_bytes_every_time():
    """safetensors writes its metadata map in an order that changes between processes; the file is
    written with its header sorted, so the same tokens always make the same file, and it still loads."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from semcodec.codec.token_file import TokenOutput, token_file_bytes\n"
        "meta = {f'key{i}': str(i) for i in range(12)}\n"
        "out = TokenOutput(torch.arange(12.0).reshape(3, 4), meta, torch.tensor([0, 4, 7]))\n"
        "sys.stdout.buffer.write(token_file_bytes(out, 'x.safetensors'))\n"
    )
    files = {subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout for _ in range(3)}
    assert len(files) == 1
    from safetensors.torch import load

    loaded = load(files.pop())
    assert loaded["tokens"].shape == (3, 4) and loaded["positions"].tolist() == [0, 4, 7]
