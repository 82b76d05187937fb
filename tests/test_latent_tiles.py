"""Format 5 codes a large image's latent in independent tiles; --max-pixels bounds what is coded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semcodec import bitstream
from semcodec.bitstream import layout
from semcodec.cli.main import main
from semcodec.codec import Codec, tiled
from semcodec.errors import BitstreamError, ImageError, InputError
from tests.conftest import synthetic_image


def test_latent_tiles_cover_the_grid_once_from_format_5():
    covered = np.zeros((300, 200), dtype=int)
    for top, left, bottom, right in bitstream.latent_tiles(300, 200, 5):
        covered[top:bottom, left:right] += 1
    assert (covered == 1).all() and len(bitstream.latent_tiles(300, 200, 5)) == 3 * 2
    assert bitstream.latent_tiles(300, 200, 4) == [(0, 0, 300, 200)]  # earlier formats: one walk
    assert bitstream.latent_tiles(128, 128, 5) == [(0, 0, 128, 128)]


def test_tile_streams_round_trip_and_refuse_damage():
    streams = [b"abc", b"", b"de"]
    payload = bitstream.pack_streams(streams)
    assert bitstream.unpack_streams(payload, 3, "z") == streams
    assert bitstream.pack_streams([b"xyz"]) == b"xyz"  # one tile: laid out as in format 4
    for damaged, what in ((payload[:-1], "cut short"), (payload + b"!", "after its 3 tiles"), (payload[:2], "ends")):
        with pytest.raises(BitstreamError, match=what):
            bitstream.unpack_streams(damaged, 3, "z")


@pytest.fixture()
def small_tiles(monkeypatch):
    """Tiles of 8 latent positions (128 px), so a small image exercises several."""
    monkeypatch.setattr(layout, "LATENT_TILE", 8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b) ** 2)))


@pytest.mark.parametrize("space", ["none", None])
def test_a_tiled_file_decodes_every_symbol_as_coded(tiny_weights, small_tiles, space):
    image = synthetic_image(200, 330, seed=3)
    codec = Codec(tiny_weights)
    result = codec.encode(image, 2, token_space=space)
    header = bitstream.unpack(result.data)
    assert (
        header.version == bitstream.FORMAT_VERSION >= bitstream.TILED_FROM and header.find(bitstream.MASK_CHUNK) is None
    )
    assert len(bitstream.unpack_streams(header.chunk(bitstream.Z_CHUNK), 6, "z")) == 6  # 256 x 384 padded: 2 x 3
    decoded = codec.decode_symbols(result.data)
    assert np.array_equal(decoded.symbols.z, result.symbols.z) and np.array_equal(decoded.symbols.y, result.symbols.y)
    base = codec.decode_symbols(result.data, base_only=True)  # the base layer alone: the same base
    cb = decoded.model.base_channels
    assert np.array_equal(base.y_hat[:, :cb], decoded.y_hat[:, :cb])
    pixels = codec.decode(result.data)
    assert pixels.shape == image.shape


def test_tiles_cost_little_and_leave_no_seams(tiny_weights, monkeypatch):
    image = synthetic_image(192, 320, seed=4)
    codec = Codec(tiny_weights)
    whole = codec.encode(image, 2, token_space="none")
    whole_psnr = _psnr(codec.decode(whole.data), image)
    monkeypatch.setattr(layout, "LATENT_TILE", 8)
    tiles = codec.encode(image, 2, token_space="none")
    assert tiled.tile_count(image.shape[:2], codec.model("vit-hp-small")[0]) == 6
    assert len(tiles.data) <= 1.1 * len(whole.data)
    assert _psnr(codec.decode(tiles.data), image) >= whole_psnr - 0.3


def test_a_photo_wider_than_one_tile_is_tiled_at_the_real_tile_size(tiny_weights):
    image = synthetic_image(48, 2100, seed=5)  # 2112 px padded: 132 latent columns, two tiles
    codec = Codec(tiny_weights)
    result = codec.encode(image, 1, token_space="none")
    assert tiled.tile_count(image.shape[:2], codec.model("vit-hp-small")[0]) == 2
    assert np.array_equal(codec.decode_symbols(result.data).symbols.y, result.symbols.y)
    assert codec.decode(result.data).shape == image.shape


def test_damaged_tiles_are_one_clear_error(tiny_weights, small_tiles):
    codec = Codec(tiny_weights)
    data = codec.encode(synthetic_image(200, 330, seed=3), 2, token_space="none").data
    header = bitstream.unpack(data)
    chunks = [
        dataclasses.replace(c, payload=c.payload[:-3]) if c.tag == bitstream.ENHANCEMENT_CHUNK else c
        for c in header.chunks
    ]
    damaged = bitstream.pack(dataclasses.replace(header, chunks=tuple(chunks)))
    with pytest.raises(BitstreamError, match="enhancement layer chunk"):
        codec.decode(damaged)


def test_pixel_pruning_is_refused_for_a_tiled_image(tiny_weights, small_tiles):
    with pytest.raises(InputError, match="keep_tokens"):
        Codec(tiny_weights).encode(synthetic_image(200, 330), 1, token_space="none", keep_tokens=10)


def test_max_pixels_bounds_encode_and_decode(tiny_weights, tmp_path):
    codec = Codec(tiny_weights)
    image = synthetic_image(64, 80)
    data = codec.encode(image, 1, token_space="none").data
    codec.max_pixels = 64 * 80 - 1
    with pytest.raises(ImageError, match="--max-pixels"):
        codec.encode(image, 1, token_space="none")
    with pytest.raises(BitstreamError, match="too large"):
        codec.decode(data)
    source, bits = tmp_path / "in.png", tmp_path / "out.smc"
    Image.fromarray(image).save(source)
    runner = CliRunner()
    weights = ["--weights", str(tiny_weights)]
    refused = runner.invoke(main, [*weights, "encode", str(source), str(bits), "--max-pixels", "5000"])
    assert refused.exit_code != 0 and "5000-pixel limit" in refused.output and not bits.exists()
    done = runner.invoke(main, [*weights, "encode", str(source), str(bits), "--token-space", "none"])
    assert done.exit_code == 0, done.output
    out = tmp_path / "out.png"
    refused = runner.invoke(main, [*weights, "decode", str(bits), "-o", str(out), "--max-pixels", "5000"])
    assert refused.exit_code != 0 and "too large" in refused.output and not out.exists()
    assert "Traceback" not in refused.output
