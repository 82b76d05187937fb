"""Shared fixtures: the shipped codec, Kodak images, and a tiny trained model for fast tests."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("OMP_NUM_THREADS", "2")

from semcodec.shared_data import DATA_ROOT  # noqa: E402 (after the thread setting)

# a clone away from the workplace (CI may clone elsewhere) still finds the shared data
DATA = next((p for p in (DATA_ROOT, Path("/work/shared/data")) if (p / "kodak").is_dir()), DATA_ROOT)
KODAK = DATA / "kodak"


@pytest.fixture(scope="session")
def codec():
    from semcodec.codec import Codec

    return Codec()


@pytest.fixture(scope="session")
def kodak_image() -> np.ndarray:
    """kodim23 (parrots), or a synthetic 768x512 photo-like image if the data folder is absent."""
    from semcodec.codec.image_io import read_image

    path = KODAK / "kodim23.png"
    if path.exists():
        return read_image(path).pixels
    return synthetic_image(512, 768)


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture: compressible like a photo, unlike white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / 37.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], axis=-1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny model trained for a few steps with `semcodec train --tiny` (weights dir path)."""
    from click.testing import CliRunner

    from semcodec.cli.main import main

    root = tmp_path_factory.mktemp("data")
    from PIL import Image

    for i in range(3):
        Image.fromarray(synthetic_image(160, 200, seed=i)).save(root / f"img{i}.png")
    out = tmp_path_factory.mktemp("weights")
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(root),
            "--out",
            str(out),
            "--tiny",
            "--steps",
            "4",
            "--batch",
            "2",
            "--crop",
            "64",
            "--save-every",
            "2",
            "--lambdas",
            "0.002,0.02",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_patch_weights(tiny_weights, tmp_path_factory) -> Path:
    """The tiny model grown with both patch paths (``--arch analysis_patch=true ...``), trained 4 more steps."""
    import shutil

    from click.testing import CliRunner
    from PIL import Image

    from semcodec.cli.main import main

    data = tmp_path_factory.mktemp("patch-data")
    for i in range(2):
        Image.fromarray(synthetic_image(96, 128, seed=10 + i)).save(data / f"img{i}.png")
    out = tmp_path_factory.mktemp("patch-weights") / "w"
    shutil.copytree(tiny_weights, out)
    args = ["train", "--data", str(data), "--out", str(out), "--batch", "2", "--crop", "64", "--steps", "8"]
    args += ["--lambdas", "0.002,0.02", "--arch", "analysis_patch=true", "--arch", "synthesis_patch=true"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out
