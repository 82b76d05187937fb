"""A trained model grows (analysis blocks, patch paths, qualities) without changing what it computes,
and refuses any other change of architecture."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from semcodec.cli.main import main
from semcodec.codec import Codec
from tests.conftest import synthetic_image


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
