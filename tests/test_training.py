"""`semcodec train` writes a registered, hash-checked model that resumes and codes images."""

from __future__ import annotations

import json
from itertools import pairwise

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


def test_one_schedule_serves_every_training_loop():
    """Warm-up, flat, cosine to the floor: the codec's (floor 5%, late decay) and the head's and
    semantic layer's (cosine over the whole budget to 0) are the same function."""
    import math

    from semcodec.training.budget import scheduled_lr

    assert scheduled_lr(1.0, 0.0, 0, warmup_steps=100) == 0.01  # first step of the warm-up
    assert scheduled_lr(1.0, 0.5, 500, warmup_steps=100) == 0.5 * (1 + math.cos(math.pi * 0.5))
    assert scheduled_lr(2.0, 0.3, 500, warmup_steps=100, decay_from=0.6, floor=0.05) == 2.0  # flat
    assert scheduled_lr(2.0, 1.0, 500, warmup_steps=100, decay_from=0.6, floor=0.05) == 2.0 * 0.05
    assert scheduled_lr(2.0, 1.7, 500, warmup_steps=100, decay_from=0.6, floor=0.05) == 2.0 * 0.05  # past the end
