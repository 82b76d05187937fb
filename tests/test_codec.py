"""End-to-end coding with the shipped weights: exact symbols, honest bpp, usable pixels and tokens."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from semcodec import bitstream
from semcodec.codec.api import Symbols
from semcodec.errors import BitstreamError, WeightsError
from tests.conftest import KODAK, synthetic_image

PSNR_FLOOR = {1: 30.7, 2: 32.0, 3: 33.1, 4: 34.2}
"""Lower bounds on kodim23 PSNR per quality, set a margin under what the shipped weights (vit-hp-192)
measure on it."""


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def encoded(codec, kodak_image):
    """Pixel-only files (``token_space="none"``): what these tests pin is the pixel layers."""
    return {q: codec.encode(kodak_image, q, token_space="none") for q in sorted(codec.registry.qualities)}


def test_at_least_three_qualities_with_distinct_rates(encoded):
    sizes = [len(encoded[q].data) for q in sorted(encoded)]
    assert len(sizes) >= 3
    assert all(a < b for a, b in zip(sizes[:-1], sizes[1:], strict=True)), sizes


@pytest.mark.parametrize("quality", [1, 2, 3, 4])
def test_round_trip_per_quality(codec, kodak_image, encoded, quality):
    result = encoded[quality]
    decoded = codec.decode_symbols(result.data)
    np.testing.assert_array_equal(decoded.symbols.z, result.symbols.z)
    np.testing.assert_array_equal(decoded.symbols.y, result.symbols.y)
    h, w = kodak_image.shape[:2]
    assert result.bpp == len(result.data) * 8 / (h * w)
    pixels = codec.decode(result.data)
    assert pixels.shape == kodak_image.shape and pixels.dtype == np.uint8
    if KODAK.is_dir():  # the floors were measured on kodim23, not on the synthetic stand-in
        assert psnr(pixels, kodak_image) > PSNR_FLOOR[quality]


def test_a_default_file_serves_the_shipped_towers_tokens_from_its_semantic_layer(codec, kodak_image):
    """Every default file carries the semantic layer of the registry's tower; ``"none"`` writes pixels alone."""
    default = codec.encode(kodak_image, 1)
    tags = [c.tag for c in bitstream.unpack(default.data).chunks]
    assert tags[0] == bitstream.SEMANTIC_CHUNK and bitstream.TOKEN_SPACE_CHUNK not in tags  # SEM names its tower
    tokens = codec.decode_tokens(default.data)
    assert tokens.metadata["layers_read"] == "semantic" and tokens.metadata["token_space"] == "efficientnet-lite0"
    assert tokens.tokens.shape[1] == 1280
    plain = codec.encode(kodak_image, 1, token_space="none")
    assert bitstream.SEMANTIC_CHUNK not in [c.tag for c in bitstream.unpack(plain.data).chunks]
    np.testing.assert_array_equal(codec.decode(default.data), codec.decode(plain.data))  # the same pixel layers


def test_pixels_and_tokens_from_one_file(codec, encoded):
    data = encoded[3].data
    pixels = codec.decode(data)
    tokens = codec.decode_tokens(data)
    decoded = codec.decode_symbols(data)
    h, w = decoded.y_hat.shape[2:]
    assert tokens.tokens.shape == (h * w, decoded.model.base_channels)
    assert tokens.metadata["token_count"] == str(h * w)
    assert tokens.metadata["source_size"] == f"{pixels.shape[1]}x{pixels.shape[0]}"
    assert torch_all_finite(tokens.tokens)


def torch_all_finite(t) -> bool:
    import torch

    return bool(torch.isfinite(t).all())


def test_encoding_is_deterministic(codec, kodak_image, encoded):
    assert codec.encode(kodak_image, 2, token_space="none").data == encoded[2].data
    assert codec.encode(kodak_image, 2).data == codec.encode(kodak_image, 2).data  # the semantic layer too


@pytest.mark.parametrize("shape", [(1, 1), (1, 97), (65, 3), (67, 129), (200, 300)])
def test_odd_sizes_decode_to_exact_size(codec, shape):
    image = synthetic_image(*shape, seed=sum(shape))
    result = codec.encode(image, 1)
    pixels = codec.decode(result.data)
    assert pixels.shape == image.shape


def test_symbol_crc_catches_a_desynchronised_decoder(codec, encoded, monkeypatch):
    """A decoder whose entropy parameters drift must fail loudly, not return a wrong image."""
    import semcodec.codec.latent_walk as walk

    real = walk.entropy_parameters

    def drifted(tables, means_fixed, scales_fixed, scale_table=False):
        means, stds = real(tables, means_fixed, scales_fixed, scale_table)
        return means, stds * 1.25

    monkeypatch.setattr(walk, "entropy_parameters", drifted)
    with pytest.raises(BitstreamError):
        codec.decode(encoded[2].data)


FORMAT_V1_FILE = Path(__file__).parent / "conformance" / "vit-hp-192" / "format-v1-q2.smc"
"""``synthetic_image(64, 96, seed=11)`` at quality 2 in format version 1 (version field 1, stds
rounded up to the scale table), written for the released vit-hp-192 weights by the build that
shipped them (commit 44b6c2d: its encoder with table-rounded stds, the version field set to 1).
Part of vit-hp-192's conformance set, so it is never rewritten."""


def test_format_version_1_files_still_decode(codec):
    """Files written before the scale table went away decode with table-rounded stds: the symbols'
    CRC (the writer's) matches only if the decoder rebuilt the v1 stds exactly."""
    data = FORMAT_V1_FILE.read_bytes()
    assert bitstream.unpack(data).version == 1
    assert codec.decode(data).shape == (64, 96, 3)
    as_version_2 = bitstream.pack(dataclasses.replace(bitstream.unpack(data), version=2))
    # the same payload read with exact stds: a CRC mismatch, or symbols the range coder cannot read
    with pytest.raises(BitstreamError, match="CRC|does not decode"):
        codec.decode(as_version_2)


def test_coded_stds_are_the_exact_fixed_point_scales(codec, monkeypatch):
    """Version 2 codes with ``scale / 2**frac_bits`` itself, not a table entry: the 64-entry table
    rounded every std up, which cost rate."""
    import semcodec.codec.latent_walk as walk

    seen: list[np.ndarray] = []
    real = walk.entropy_parameters

    def spy(tables, means_fixed, scales_fixed, scale_table=False):
        means, stds = real(tables, means_fixed, scales_fixed, scale_table)
        exact = np.clip(
            (scales_fixed[0] / tables.one).reshape(stds.shape).numpy(), tables.scale_floor, tables.scale_ceiling
        )
        assert not scale_table and np.array_equal(stds, exact)
        seen.append(stds)
        return means, stds

    monkeypatch.setattr(walk, "entropy_parameters", spy)
    data = codec.encode(synthetic_image(64, 96, seed=11), 2).data
    tables = codec.model(bitstream.unpack(data).model_id)[1]
    stds = np.concatenate([s.reshape(-1) for s in seen])
    unclipped = stds[stds > tables.scale_floor]  # the floor is a table entry whichever rule codes
    assert unclipped.size > 100 and np.mean(~np.isin(unclipped, tables.scale_table)) > 0.5
    assert bitstream.unpack(data).version == bitstream.FORMAT_VERSION == 6  # every new file: the lean header


def test_tokens_wholly_in_the_padding_are_not_coded(codec, monkeypatch):
    """Format version 3: 100x76 pads to an 8x8 token grid of which 5x7 tokens cover the image; the
    others draw only pixels that are cropped away, so the file leaves them out (symbols zero, the
    decoder fills in the mean) and is smaller than one that codes them."""
    import semcodec.codec.api as api

    image = synthetic_image(76, 100, seed=5)
    result = codec.encode(image, 2, token_space="none")
    decoded = codec.decode_symbols(result.data)
    assert decoded.header.version >= 3 and decoded.mask is None  # no mask chunk: the size says it all
    grid = tuple(decoded.y_hat.shape[2:])
    symbols = decoded.symbols.y.reshape(-1, *grid)
    assert grid == (8, 8) and symbols[:, :5, :7].any()
    assert not symbols[:, 5:].any() and not symbols[:, :, 7:].any()
    assert codec.decode(result.data).shape == image.shape

    monkeypatch.setattr(api, "content_tokens", lambda grid, size, stride: None)  # every token coded
    coding_padding = codec.encode(image, 2, token_space="none")
    assert coding_padding.symbols.y.reshape(-1, *grid)[:, 5:].any()
    assert len(coding_padding.data) > len(result.data)


VERSION_2_FILE = Path(__file__).parent / "conformance" / "vit-hp-192" / "kodim05-100x76-q1.smc"
"""A format version 2 file of an image with padding tokens (100x76), which version 2 coded."""
VERSION_3_FILE = Path(__file__).parent / "conformance" / "vit-hp-192" / "format-v3-kodim05-100x76-q3.smc"


@pytest.mark.parametrize(("version", "other"), [(2, 3), (3, 2), (6, 2)])
def test_the_format_version_says_whether_padding_tokens_are_coded(codec, version, other):
    """Version 2 files (every token coded) still decode; read under the other version's rule, a
    file fails its CRC or its range decode instead of decoding to a wrong image."""
    if version < 4:
        data = (VERSION_2_FILE if version == 2 else VERSION_3_FILE).read_bytes()
    else:
        data = codec.encode(synthetic_image(76, 100, seed=5), 1, token_space="none").data
    assert bitstream.unpack(data).version == version
    assert codec.decode(data).shape == (76, 100, 3)
    relabelled = bitstream.pack(dataclasses.replace(bitstream.unpack(data), version=other))
    with pytest.raises(BitstreamError, match="CRC|does not decode"):
        codec.decode(relabelled)


def test_corrupted_payload_is_refused(codec, encoded):
    data = bytearray(encoded[2].data)
    data[-5] ^= 0x10
    with pytest.raises(BitstreamError):
        codec.decode(bytes(data))


def test_unknown_quality(codec, kodak_image):
    with pytest.raises(WeightsError, match="quality 99"):
        codec.encode(kodak_image, 99)


def test_symbols_crc_covers_every_symbol():
    a = Symbols(np.zeros((2, 3), np.int32), np.arange(10, dtype=np.int32))
    b = Symbols(np.zeros((2, 3), np.int32), np.arange(10, dtype=np.int32) * (np.arange(10) != 9))
    assert a.crc32() != b.crc32()


def test_symbols_crc_is_the_crc_of_the_int32_bytes_whatever_the_chunking_or_dtype():
    from semcodec import bitstream
    from semcodec.codec import entropy

    z = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    y = (np.arange(entropy.CRC_CHUNK + 77) % 511 - 255).astype(np.int32)
    whole = bitstream.symbols_crc(z.astype("<i4").tobytes() + y.astype("<i4").tobytes())
    assert entropy.symbols_crc32(z, y) == whole
    assert entropy.symbols_crc32(z, y.astype(np.int16)) == whole  # tiled files hold y as int16


@pytest.mark.parametrize("keep", [1, 40, 500])
def test_pruned_tokens_round_trip(codec, kodak_image, encoded, keep):
    result = codec.encode(kodak_image, 3, token_space="none", keep_tokens=keep)
    decoded = codec.decode_symbols(result.data)
    np.testing.assert_array_equal(decoded.symbols.y, result.symbols.y)
    assert int(decoded.mask.sum()) == keep
    assert len(result.data) < len(encoded[3].data)
    tokens = codec.decode_tokens(result.data)
    assert tokens.tokens.shape[0] == keep and tokens.positions.shape == (keep,)
    assert tokens.metadata["kept_tokens"] == str(keep)
    full = codec.decode_tokens(encoded[3].data).tokens
    assert tokens.tokens.shape[1] == full.shape[1]
    assert codec.decode(result.data).shape == kodak_image.shape  # pixels: the rest inpainted from the prior


def test_fewer_tokens_fewer_bytes(codec, kodak_image):
    sizes = [len(codec.encode(kodak_image, 2, token_space="none", keep_tokens=n).data) for n in (16, 128, 768)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_keeping_every_token_changes_nothing_but_the_mask(codec, kodak_image, encoded):
    h, w = kodak_image.shape[:2]
    every = codec.encode(kodak_image, 2, token_space="none", keep_tokens=(-(-h // 16)) * (-(-w // 16)))
    np.testing.assert_array_equal(codec.decode(every.data), codec.decode(encoded[2].data))


def test_tokens_need_only_the_base_layer(codec, encoded):
    from semcodec import bitstream
    from semcodec.bitstream import BASE_CHUNK
    from semcodec.errors import TruncatedBitstreamError

    data = encoded[3].data
    full = bitstream.unpack(data)
    prefix = bitstream.read_prefix(__import__("io").BytesIO(data), BASE_CHUNK)
    assert len(prefix) < len(data)
    assert len(data) - len(prefix) == len(full.chunk("YE  "))  # the enhancement layer is the rest
    from_prefix = codec.decode_tokens(prefix)
    torch_equal = (from_prefix.tokens == codec.decode_tokens(data).tokens).all()
    assert bool(torch_equal)
    assert from_prefix.metadata["bitstream_bytes_read"] == str(len(prefix))
    with pytest.raises(TruncatedBitstreamError):
        codec.decode(prefix)  # pixels need the enhancement layer


def test_keep_tokens_outside_the_image_is_refused(codec):
    """A 64 x 96 image has 4 x 6 latent tokens: --tokens must name 1..24."""
    from semcodec.errors import InputError

    image = synthetic_image(64, 96, seed=3)
    assert codec.encode(image, 1, token_space="none", keep_tokens=24).data
    for keep in (0, 25):
        with pytest.raises(InputError, match=f"keep_tokens={keep}: a 96x64 image has 1..24 latent tokens"):
            codec.encode(image, 1, token_space="none", keep_tokens=keep)
