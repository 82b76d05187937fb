"""Large images run the full-resolution stages in tiles: same symbols, same pixels as run whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semcodec.codec import Codec, tiling
from tests.conftest import synthetic_image


def test_tile_grid_covers_the_image_once():
    covered = np.zeros((150, 200), dtype=int)
    for top, left, bottom, right in tiling.tiles(150, 200, 64):
        covered[top:bottom, left:right] += 1
    assert (covered == 1).all() and tiling.tile_count(150, 200, 64) == 3 * 4


@pytest.mark.parametrize("shape", [(200, 330), (130, 70)])
@pytest.mark.parametrize("weights", ["tiny_weights", "tiny_patch_weights"])
def test_tiled_coding_matches_the_whole_image(request, weights, monkeypatch, shape):
    image = synthetic_image(*shape, seed=7)
    codec = Codec(request.getfixturevalue(weights))
    model = codec.model("vit-hp-small")[0]
    if model.analysis_patch is not None:  # patch paths as large as the stem's, so tiling them would show
        torch.manual_seed(0)
        for layer in (model.analysis_patch, model.synthesis_patch):
            layer.weight.data.normal_(0, 0.05)
    whole = codec.encode(image, 1)
    whole_pixels = codec.decode(whole.data)
    monkeypatch.setattr(tiling, "TILE", 64)
    monkeypatch.setattr(tiling, "TILE_ABOVE_PIXELS", 4096)
    tiled = codec.encode(image, 1)
    assert np.array_equal(tiled.symbols.y, whole.symbols.y) and np.array_equal(tiled.symbols.z, whole.symbols.z)
    assert tiled.data == whole.data
    pixels = codec.decode(whole.data)
    assert pixels.shape == image.shape
    difference = np.abs(pixels.astype(int) - whole_pixels.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() <= 0.01  # the conformance bound for pixels
