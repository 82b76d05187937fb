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


def train_further(tmp_path_factory, start: Path, name: str, args: list[str], size: tuple[int, int], seed: int) -> Path:
    """A copy of the weights folder ``start`` trained on by ``semcodec train ARGS`` on two synthetic
    photos of ``size`` (seeds ``seed``, ``seed + 1``): how the fixtures grow the tiny model."""
    import shutil

    from click.testing import CliRunner
    from PIL import Image

    from semcodec.cli.main import main

    work = tmp_path_factory.mktemp(name) / "weights"
    shutil.copytree(start, work)
    data = work.parent / "data"
    data.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_image(*size, seed=seed + i)).save(data / f"{i}.png")
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(work), *args])
    assert result.exit_code == 0, result.output
    return work


@pytest.fixture(scope="session")
def tiny_patch_weights(tiny_weights, tmp_path_factory) -> Path:
    """The tiny model grown with both patch paths (``--arch analysis_patch=true ...``), trained 4 more steps."""
    args = ["--batch", "2", "--crop", "64", "--steps", "8", "--lambdas", "0.002,0.02"]
    args += ["--arch", "analysis_patch=true", "--arch", "synthesis_patch=true"]
    return train_further(tmp_path_factory, tiny_weights, "patch", args, (96, 128), seed=10)


@pytest.fixture(scope="session")
def context_weights(tmp_path_factory, tiny_weights) -> Path:
    """The tiny model given a context model by `train --entropy-only --context-slices 4`."""
    args = ["--entropy-only", "--context-slices", "4"]
    args += ["--steps", "12", "--batch", "4", "--crop", "64", "--lr", "0.02", "--lambdas", "0.002,0.02"]
    return train_further(tmp_path_factory, tiny_weights, "ctx", args, (96, 120), seed=10)


def assert_exact_round_trip(codec, keep_tokens: int | None) -> None:
    """Every symbol decodes as coded at two qualities, and the base layer alone gives the same base."""
    import torch

    image = synthetic_image(70, 90, seed=3)
    for quality in (1, 2):
        result = codec.encode(image, quality, keep_tokens=keep_tokens)
        decoded = codec.decode_symbols(result.data)
        np.testing.assert_array_equal(decoded.symbols.y, result.symbols.y)
        np.testing.assert_array_equal(decoded.symbols.z, result.symbols.z)
        assert codec.decode(result.data).shape == image.shape
        base = codec.decode_symbols(result.data, base_only=True)
        cb = base.model.base_channels
        np.testing.assert_array_equal(base.symbols.y.reshape(24, -1)[:cb], result.symbols.y.reshape(24, -1)[:cb])
        torch.testing.assert_close(base.y_hat[:, :cb], decoded.y_hat[:, :cb], rtol=0, atol=0)
