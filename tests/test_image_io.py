"""Image input: every odd file either becomes 8-bit RGB (with a warning) or a clear ImageError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from semcodec.codec.image_io import MAX_PIXELS, read_image
from semcodec.errors import ImageError
from tests.conftest import synthetic_image


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


RGB = Image.fromarray(synthetic_image(48, 64))


def test_plain_rgb_is_untouched():
    loaded = read_image(encoded(RGB, "PNG"))
    np.testing.assert_array_equal(loaded.pixels, np.asarray(RGB))
    assert loaded.warnings == []


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "not an image"),
        (b"plain text, named .png", "not an image"),
        (encoded(RGB, "PNG")[:200], "cannot read"),
        (encoded(RGB, "JPEG")[:300], "cannot read"),
    ],
)
def test_unreadable_inputs(data, match):
    with pytest.raises(ImageError, match=match):
        read_image(data)


def test_missing_path(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "absent.png")


@pytest.mark.parametrize(
    "img, fmt",
    [
        (RGB.convert("CMYK"), "JPEG"),
        (RGB.convert("L"), "PNG"),
    ],
)
def test_converted_modes_warn(img, fmt):
    loaded = read_image(encoded(img, fmt))
    assert loaded.pixels.shape == (48, 64, 3) and loaded.pixels.dtype == np.uint8
    assert len(loaded.warnings) == 1 and "converted to RGB" in loaded.warnings[0]


def test_alpha_warns_only_when_something_is_transparent():
    opaque = read_image(encoded(RGB.convert("RGBA"), "PNG"))
    assert opaque.warnings == [] and np.array_equal(opaque.pixels, np.asarray(RGB))
    half = RGB.convert("RGBA")
    half.putalpha(128)
    loaded = read_image(encoded(half, "PNG"))
    assert len(loaded.warnings) == 1 and "transparency composited on white" in loaded.warnings[0]
    assert (loaded.pixels.astype(int) >= np.asarray(RGB).astype(int) - 1).all()  # lightened towards white


def test_api_inputs_are_taken_converted_or_refused():
    """A path, bytes, a PIL.Image and arrays: uint8 H x W x 3 as is (read-only too, without warnings),
    other layouts converted with a file's warnings, the rest refused with what was expected."""
    import warnings

    from semcodec.codec.image_io import load_image
    from semcodec.errors import InputError

    pixels = np.asarray(RGB)
    assert not pixels.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for source in (pixels, RGB, encoded(RGB, "PNG")):
            loaded = load_image(source)
            assert np.array_equal(loaded.pixels, pixels) and loaded.warnings == []
    grey = load_image(pixels[:, :, 0])
    assert grey.pixels.shape == (48, 64, 3) and grey.warnings == ["greyscale array converted to RGB"]
    assert load_image(pixels[:, :, :1]).warnings == ["greyscale array converted to RGB"]
    opaque = load_image(np.dstack([pixels, np.full((48, 64), 255, np.uint8)]))
    assert np.array_equal(opaque.pixels, pixels) and opaque.warnings == []
    clear = load_image(np.dstack([pixels, np.zeros((48, 64), np.uint8)]))
    assert (clear.pixels == 255).all() and "transparency" in clear.warnings[0]
    deep = load_image(pixels.astype(np.uint16) * 257)
    assert np.array_equal(deep.pixels, pixels) and deep.warnings == ["16-bit array reduced to 8-bit"]
    refusals = {
        "channels first": pixels.transpose(2, 0, 1),
        "dtype float64": pixels / 255.0,
        "dtype bool": pixels > 0,
        "expected H x W x 3": pixels[:, :, :2],
        "cannot encode a list": [[0, 1]],
    }
    for message, source in refusals.items():
        with pytest.raises(InputError, match=message) as caught:
            load_image(source)
        assert isinstance(caught.value, ValueError)


def test_palette_with_transparency_is_composited_on_white():
    pal = RGB.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    loaded = read_image(encoded(pal, "PNG", transparency=0))
    assert loaded.warnings and "transparency" in loaded.warnings[0]
    idx = np.asarray(pal) == 0
    assert (loaded.pixels[idx] == 255).all()


def test_16_bit_is_scaled_not_clipped():
    deep = np.arange(64, dtype=np.uint16)[None, :].repeat(8, 0) * 1024
    loaded = read_image(encoded(Image.fromarray(deep), "PNG"))
    assert loaded.pixels[0, -1, 0] == round(63 * 1024 / 65535 * 255)
    assert loaded.warnings


def test_animation_codes_first_frame_with_warning():
    frames = [RGB, Image.fromarray(255 - np.asarray(RGB))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    loaded = read_image(data)
    assert any("frames" in w for w in loaded.warnings)


def test_exif_orientation_is_honoured():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = read_image(encoded(RGB, "JPEG", exif=exif.tobytes()))
    assert loaded.pixels.shape == (64, 48, 3)


def test_decompression_bomb_is_refused():
    side = int(MAX_PIXELS**0.5) + 100
    bomb = encoded(Image.new("L", (side, side)), "PNG")  # tiny file, huge image
    with pytest.raises(ImageError, match="too large"):
        read_image(bomb)


def test_max_pixels_moves_the_bomb_guard():
    with pytest.raises(ImageError, match="more than the 3000-pixel limit"):
        read_image(encoded(RGB, "PNG"), max_pixels=3000)  # 64 x 48 = 3072 pixels
    assert read_image(encoded(RGB, "PNG"), max_pixels=3072).pixels.shape == (48, 64, 3)


def test_the_module_api_warns_about_conversions(tiny_weights):
    import semcodec
    from semcodec.errors import ConversionWarning

    grey = np.ascontiguousarray(np.asarray(RGB)[:, :, 0])
    with pytest.warns(ConversionWarning, match="greyscale array converted to RGB"):
        data = semcodec.encode(grey, 1, weights_dir=tiny_weights)
    assert semcodec.decode(data, weights_dir=tiny_weights).shape == (48, 64, 3)
