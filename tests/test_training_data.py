"""Training crops: zoomed (distillation) and downscaled views, seeded, at the sizes asked."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from semcodec.cli.main import main
from tests.conftest import synthetic_image


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


def test_downscale_option_takes_a_range_or_off(tmp_path):
    from semcodec.cli.training import _parse_downscale

    assert _parse_downscale("0.5,0.9") == (0.5, 0.9) and _parse_downscale("off") is None
    for bad in ("0.9,0.5", "1.5,2", "half"):
        result = CliRunner().invoke(
            main, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "w"), "--downscale", bad]
        )
        assert result.exit_code == 2 and "--downscale" in result.output
