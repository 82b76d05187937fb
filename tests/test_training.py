"""`semcodec train` writes a registered, hash-checked model that resumes and codes images."""

from __future__ import annotations

import json
from itertools import pairwise

import click
import numpy as np
import pytest
from click.testing import CliRunner

from semcodec.cli.main import main
from semcodec.codec import Codec
from tests.conftest import synthetic_image


def test_train_writes_registry_and_weights(tiny_weights):
    registry = json.loads((tiny_weights / "registry.json").read_text())
    model = registry["models"]["vit-hp-small"]
    assert model["info"]["steps"] == 4
    assert set(model["info"]["train_seconds_by_device"]) == {"cpu"}
    assert model["info"]["train_seconds_by_device"]["cpu"] == model["info"]["train_seconds"]
    assert (tiny_weights / model["file"]).exists()
    assert set(registry["qualities"]) == {"1", "2"}
    assert registry["qualities"]["2"]["lambda"] == 0.02


def test_trained_tiny_model_round_trips(tiny_weights):
    codec = Codec(tiny_weights)
    image = synthetic_image(70, 90)
    for quality in (1, 2):
        result = codec.encode(image, quality)
        decoded = codec.decode_symbols(result.data)
        np.testing.assert_array_equal(decoded.symbols.y, result.symbols.y)
        assert codec.decode(result.data).shape == image.shape


def test_training_resumes_from_checkpoint(tiny_weights, tmp_path):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tiny_weights, work)
    data = tmp_path / "data"
    data.mkdir()
    from PIL import Image

    Image.fromarray(synthetic_image(100, 100)).save(data / "a.png")
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(work),
            "--steps",
            "6",
            "--batch",
            "2",
            "--crop",
            "64",
            "--save-every",
            "100",
            "--lambdas",
            "0.002,0.02",
        ],
    )
    assert result.exit_code == 0, result.output
    registry = json.loads((work / "registry.json").read_text())
    assert registry["models"]["vit-hp-small"]["info"]["steps"] == 6
    assert registry["models"]["vit-hp-small"]["config"]["stem_channels"] == 16  # resumed, not re-created


def test_auto_device_falls_back_to_cpu_without_cuda(monkeypatch):
    import torch

    from semcodec.training.train import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")


def test_zoomed_crops_are_seeded_and_resized(tmp_path):
    """Random-resized crops (distillation's augmentation): the crop size, the same crops for the same
    seed, other views than plain crops; a zoom outside (0, 1] is refused."""
    import pytest
    import torch
    from PIL import Image

    from semcodec.training.data import CropBank

    for i in range(2):
        Image.fromarray(synthetic_image(120, 160, seed=i)).save(tmp_path / f"{i}.png")
    paths = sorted(tmp_path.glob("*.png"))
    first = CropBank(paths, short_side=120, crop=64, seed=3, zoom=(0.2, 1.0)).sample(6)
    again = CropBank(paths, short_side=120, crop=64, seed=3, zoom=(0.2, 1.0)).sample(6)
    plain = CropBank(paths, short_side=120, crop=64, seed=3).sample(6)
    assert first.shape == plain.shape == (6, 3, 64, 64)
    assert torch.equal(first, again) and not torch.equal(first, plain)
    assert 0 <= first.min() and first.max() <= 1
    with pytest.raises(ValueError, match="zoom"):
        CropBank(paths, crop=64, zoom=(0.0, 1.0))


def test_arch_sets_a_new_model_and_cannot_change_a_trained_one(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(synthetic_image(96, 96, seed=7)).save(data / "a.png")
    out = tmp_path / "w"
    args = ["train", "--data", str(data), "--out", str(out), "--tiny", "--steps", "2", "--batch", "1", "--crop", "64"]
    args += ["--model-name", "wide", "--arch", "token_dim=24", "--arch", "latent_channels=24"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "registry.json").read_text())["models"]["wide"]["config"]
    assert (config["token_dim"], config["latent_channels"], config["stem_channels"]) == (24, 24, 16)
    changed = CliRunner().invoke(main, [*args[:-4], "--steps", "3", "--arch", "token_dim=32"])
    assert changed.exit_code == 1 and "a new architecture needs a new --model-name" in changed.output
    unknown = CliRunner().invoke(main, [*args, "--arch", "width=3"])
    assert unknown.exit_code == 2 and "KEY one of stem_channels" in unknown.output


def test_arch_values_are_typed_by_the_config_annotations():
    from semcodec.cli.training import _parse_arch

    arch = _parse_arch(("token_dim=192", "max_gain=2.5", "base_channels=none", "base_channels=64"))
    assert arch == {"token_dim": 192, "max_gain": 2.5, "base_channels": 64}
    assert type(arch["token_dim"]) is int and type(arch["max_gain"]) is float
    assert _parse_arch(("base_channels=None",)) == {"base_channels": None}
    for bad, message in [
        ("token_dim=none", "cannot be none"),
        ("token_dim=1.5", "not a valid int"),
        ("max_gain=big", "not a valid float"),
    ]:
        with pytest.raises(click.BadParameter, match=message):
            _parse_arch((bad,))


def test_bfloat16_transforms_keep_the_rate_in_float32():
    import torch

    from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
    from semcodec.training.config import TINY_ARCH
    from semcodec.training.train import rd_loss

    torch.manual_seed(0)
    model = SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH)).train()
    x, quality = torch.rand(2, 3, 64, 64), torch.tensor([0, 1])
    losses = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(1)  # the same noise on y and z
        out = model(x, quality, transform_dtype=dtype)
        assert out["x_hat"].dtype == out["likelihoods"]["y"].dtype == out["means"].dtype == torch.float32
        losses[dtype] = rd_loss(out, x, torch.tensor([0.01, 0.01]))
    assert losses[torch.bfloat16]["bpp"].item() == pytest.approx(losses[None]["bpp"].item(), rel=0.05)
    assert losses[torch.bfloat16]["psnr"].item() == pytest.approx(losses[None]["psnr"].item(), abs=0.3)


def test_explicit_precisions_are_obeyed_and_unknown_ones_refused():
    import torch

    from semcodec.training.train import transform_dtype

    for device in (torch.device("cpu"), torch.device("cuda")):
        assert transform_dtype("float32", device) is None
        assert transform_dtype("bfloat16", device) is torch.bfloat16
    for bad in ("float16", "fp32", "bf16", "BFLOAT16", ""):
        with pytest.raises(ValueError, match="precision must be auto, float32 or bfloat16, not"):
            transform_dtype(bad, torch.device("cpu"))


def test_auto_precision_is_bfloat16_only_on_a_cpu_with_bfloat16_instructions(monkeypatch):
    """Emulated bfloat16 is slower than float32, so ``auto`` picks it only where the CPU has it natively."""
    import torch

    from semcodec.training import train

    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(train, "native_bfloat16_cpu", lambda n=native: n)
        assert train.transform_dtype("auto", torch.device("cpu")) is expected


def test_auto_precision_on_cuda_follows_the_gpu_s_bfloat16_support(monkeypatch):
    import torch

    from semcodec.training.train import transform_dtype

    for supported, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, s=supported, **kwargs: s)
        assert transform_dtype("auto", torch.device("cuda")) is expected


def test_compiled_training_pass_computes_the_eager_losses_and_gradients():
    import torch
    import torch._inductor.config as inductor_config

    from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
    from semcodec.training.config import TINY_ARCH
    from semcodec.training.train import rd_loss, training_passes

    torch.manual_seed(0)
    model = SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH)).train()
    x, quality, lambdas = torch.rand(2, 3, 64, 64), torch.tensor([0, 1]), torch.tensor([0.01, 0.02])
    results = []
    with inductor_config.patch(fallback_random=True):  # the eager noise stream, to compare like with like
        for compiled in (False, True):
            forward, _ = training_passes(model, compiled)
            assert (forward is model) is not compiled
            torch.manual_seed(1)
            losses = rd_loss(forward(x, quality), x, lambdas)
            model.zero_grad()
            losses["loss"].backward()
            grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            results.append((losses["loss"].item(), losses["bpp"].item(), grad))
    (eager_loss, eager_bpp, eager_grad), (loss, bpp, grad) = results
    assert loss == pytest.approx(eager_loss, rel=1e-4) and bpp == pytest.approx(eager_bpp, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(grad, eager_grad, dim=0) > 0.9999


def test_learning_rate_is_flat_until_decay_from_then_anneals_to_five_percent(tmp_path):
    from semcodec.training.config import TrainConfig
    from semcodec.training.train import learning_rate

    cfg = TrainConfig(data=[], weights_dir=tmp_path, lr=1e-3, warmup_steps=10, decay_from=0.25)
    assert learning_rate(cfg, 0.0, run_step=0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 0.2, run_step=100) == pytest.approx(1e-3)
    annealing = [learning_rate(cfg, p, run_step=100) for p in np.linspace(0.25, 1.0, 16)]
    assert annealing[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in pairwise(annealing))
    assert annealing[-1] == pytest.approx(5e-5)


def test_train_without_a_model_name_resumes_the_model_out_serves(tmp_path):
    """After shipping another model (here `wide`), `semcodec train --out weights` must go on training
    it, not start a second model beside it and repoint the qualities."""
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(synthetic_image(96, 96, seed=8)).save(data / "a.png")
    out = tmp_path / "w"
    args = ["train", "--data", str(data), "--out", str(out), "--tiny", "--batch", "1", "--crop", "64"]
    first = CliRunner().invoke(main, [*args, "--steps", "2", "--model-name", "wide", "--arch", "latent_channels=24"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, [*args, "--steps", "3"])
    assert again.exit_code == 0, again.output
    registry = json.loads((out / "registry.json").read_text())
    assert list(registry["models"]) == ["wide"] and registry["models"]["wide"]["info"]["steps"] == 3


def test_downscaled_crops_shrink_a_box_of_the_photo_by_a_seeded_factor(tmp_path):
    """Per-crop downscale (training's augmentation): the crop size, the same crops for the same seed,
    other pixels than plain crops of the once-shrunk photo; bad ranges are refused."""
    import torch
    from PIL import Image

    from semcodec.training.data import CropBank

    for i in range(2):
        Image.fromarray(synthetic_image(150, 200, seed=i)).save(tmp_path / f"{i}.png")
    paths = sorted(tmp_path.glob("*.png"))
    first = CropBank(paths, short_side=None, crop=64, seed=5, downscale=(0.5, 0.9)).sample(6)
    again = CropBank(paths, short_side=None, crop=64, seed=5, downscale=(0.5, 0.9)).sample(6)
    plain = CropBank(paths, short_side=150, crop=64, seed=5).sample(6)
    assert first.shape == plain.shape == (6, 3, 64, 64)
    assert torch.equal(first, again) and not torch.equal(first, plain)
    bank = CropBank(paths, short_side=None, crop=64, seed=5, downscale=(0.5, 0.5))
    assert {bank._box(150, 200) for _ in range(5)} == {(128, 128)}  # crop / factor
    assert bank._box(100, 300) == (100, 100)  # capped by the photo
    with pytest.raises(ValueError, match="downscale"):
        CropBank(paths, short_side=None, crop=64, downscale=(0.0, 0.9))
    with pytest.raises(ValueError, match="short_side=None"):
        CropBank(paths, short_side=256, crop=64, downscale=(0.5, 0.9))


def test_extended_gains_continue_the_last_trained_step():
    import torch

    from semcodec.errors import WeightsError
    from semcodec.training.train import extend_gains

    table = torch.tensor([[0.0, 1.0], [0.5, 1.5]])
    state = {"log_gain": table, "log_inv_gain": -table, "other": torch.ones(1)}
    out = extend_gains(state, (0.01, 0.02), (0.01, 0.02, 0.04, 0.08))
    torch.testing.assert_close(out["log_gain"], torch.tensor([[0.0, 1.0], [0.5, 1.5], [1.0, 2.0], [1.5, 2.5]]))
    torch.testing.assert_close(out["log_inv_gain"], -out["log_gain"])
    assert out["other"] is state["other"] and state["log_gain"].shape == (2, 2)
    with pytest.raises(WeightsError, match="increasing"):
        extend_gains(state, (0.01, 0.02), (0.01, 0.02, 0.015))


def test_a_trained_model_gains_qualities_after_its_own_lambdas(tiny_weights, tmp_path):
    """`train --lambdas OLD,NEW` adds quality levels to a trained model (which then codes at them);
    lambdas that do not start with the trained ones are refused in one line."""
    import shutil

    from PIL import Image

    work = tmp_path / "w"
    shutil.copytree(tiny_weights, work)
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(synthetic_image(100, 100)).save(data / "a.png")
    args = ["train", "--data", str(data), "--out", str(work), "--batch", "2", "--crop", "64", "--save-every", "100"]
    wrong = CliRunner().invoke(main, [*args, "--steps", "6", "--lambdas", "0.003,0.02,0.04"])
    assert wrong.exit_code == 1 and "has 2 qualities, not the 3 lambdas" in wrong.output
    result = CliRunner().invoke(main, [*args, "--steps", "6", "--lambdas", "0.002,0.02,0.05"])
    assert result.exit_code == 0, result.output
    registry = json.loads((work / "registry.json").read_text())
    assert registry["models"]["vit-hp-small"]["config"]["num_qualities"] == 3
    assert registry["qualities"]["3"] == {"model": "vit-hp-small", "gain_index": 2, "lambda": 0.05}
    codec = Codec(work)
    image = synthetic_image(70, 90)
    sizes = [len(codec.encode(image, q).data) for q in (1, 2, 3)]
    assert codec.decode(codec.encode(image, 3).data).shape == image.shape
    assert sizes[2] > sizes[0]
    again = CliRunner().invoke(main, [*args, "--steps", "7"])  # no --lambdas: the model's own
    assert again.exit_code == 0, again.output
    lambdas = [level["lambda"] for level in json.loads((work / "registry.json").read_text())["qualities"].values()]
    assert lambdas == [0.002, 0.02, 0.05]


def test_downscale_option_takes_a_range_or_off(tmp_path):
    from semcodec.cli.training import _parse_downscale

    assert _parse_downscale("0.5,0.9") == (0.5, 0.9) and _parse_downscale("off") is None
    for bad in ("0.9,0.5", "1.5,2", "half"):
        result = CliRunner().invoke(
            main, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "w"), "--downscale", bad]
        )
        assert result.exit_code == 2 and "--downscale" in result.output


def test_a_trained_model_gains_analysis_blocks_that_start_as_the_identity(tiny_weights, tmp_path):
    import shutil

    import torch
    from PIL import Image

    from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
    from semcodec.training.config import TINY_ARCH
    from semcodec.weights import load_registry, load_state_dict

    registry = load_registry(tiny_weights)
    trained = SemanticHyperprior(SemanticHyperpriorConfig(**registry.model("vit-hp-small").config)).eval()
    trained.load_state_dict(load_state_dict(registry, "vit-hp-small"))
    deeper = SemanticHyperprior(SemanticHyperpriorConfig(**{**trained.config.to_dict(), "analysis_extra_depth": 2}))
    missing, unexpected = deeper.eval().load_state_dict(trained.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("g_a.7.blocks.") for key in missing)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(deeper.analysis(x, 1), trained.analysis(x, 1))
        new_block = deeper.g_a[7].blocks[-1]  # only its residual projections start at zero
        assert new_block.attn.qkv.weight.any() and not new_block.attn.proj.weight.any()

    work = tmp_path / "w"
    shutil.copytree(tiny_weights, work)
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(synthetic_image(96, 96, seed=3)).save(data / "a.png")
    args = ["train", "--data", str(data), "--out", str(work), "--batch", "2", "--crop", "64"]
    args += ["--lambdas", "0.002,0.02", "--arch", "analysis_extra_depth=2"]
    result = CliRunner().invoke(main, [*args, "--steps", "6"])
    assert result.exit_code == 0, result.output
    config = json.loads((work / "registry.json").read_text())["models"]["vit-hp-small"]["config"]
    assert config["analysis_extra_depth"] == 2 and config["stem_channels"] == TINY_ARCH["stem_channels"]
    fewer = CliRunner().invoke(main, [*args[:-1], "analysis_extra_depth=1", "--steps", "8"])
    assert fewer.exit_code != 0 and "may only gain parts" in fewer.output


def test_a_trained_model_gains_patch_paths_that_start_as_the_identity(tiny_weights, tiny_patch_weights):
    import torch

    from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
    from semcodec.weights import load_registry, load_state_dict

    registry = load_registry(tiny_weights)
    trained = SemanticHyperprior(SemanticHyperpriorConfig(**registry.model("vit-hp-small").config)).eval()
    trained.load_state_dict(load_state_dict(registry, "vit-hp-small"))
    grown = SemanticHyperprior(
        SemanticHyperpriorConfig(**{**trained.config.to_dict(), "analysis_patch": True, "synthesis_patch": True})
    ).eval()
    missing, unexpected = grown.load_state_dict(trained.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == [
        "analysis_patch.bias", "analysis_patch.weight", "synthesis_patch.bias", "synthesis_patch.weight"
    ]  # fmt: skip
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        y = trained.analysis(x, 1)
        torch.testing.assert_close(grown.analysis(x, 1), y)
        torch.testing.assert_close(grown.synthesis(y, 1), trained.synthesis(y, 1))

    config = json.loads((tiny_patch_weights / "registry.json").read_text())["models"]["vit-hp-small"]["config"]
    assert config["analysis_patch"] and config["synthesis_patch"]
    learned = load_state_dict(load_registry(tiny_patch_weights), "vit-hp-small")
    assert learned["analysis_patch.weight"].any() and learned["synthesis_patch.weight"].any()  # they train


def test_arch_refuses_a_non_boolean_for_a_switch(tmp_path):
    from PIL import Image

    Image.fromarray(synthetic_image(64, 64)).save(tmp_path / "a.png")
    result = CliRunner().invoke(
        main, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "w"), "--arch", "analysis_patch=maybe"]
    )
    assert result.exit_code == 2 and "analysis_patch is true or false" in result.output


def test_the_patch_paths_learn_at_their_own_rate(tmp_path):
    from pathlib import Path

    from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
    from semcodec.training.config import TINY_ARCH, TrainConfig
    from semcodec.training.train import parameter_groups

    model = SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH, analysis_patch=True))
    cfg = TrainConfig(data=[], weights_dir=Path(tmp_path), patch_lr_scale=10.0)
    params = list(model.parameters())
    rest, patches = parameter_groups(model, cfg, params)
    assert patches["lr_scale"] == 10.0 and rest["lr_scale"] == 1.0
    assert {id(p) for p in patches["params"]} == {id(p) for p in model.analysis_patch.parameters()}
    assert len(rest["params"]) + len(patches["params"]) == len(params)
    plain = SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH))
    assert len(parameter_groups(plain, cfg, list(plain.parameters()))) == 1
