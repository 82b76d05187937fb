"""Image input/output: anything Pillow reads becomes 8-bit RGB (with a warning when converted)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from semcodec.errors import ImageError, InputError

MAX_PIXELS = 200_000_000
"""Largest image semcodec reads or decodes by default (a 200 MP phone mode; ``max_pixels`` /
``--max-pixels`` raise or lower it). Format 5 codes large photos in latent tiles, so memory grows with
the pixels themselves only (docs/results.md, ``bench large``). Pillow's decompression-bomb guard uses
the same bound."""


@dataclass
class LoadedImage:
    pixels: np.ndarray  # (H, W, 3) uint8
    warnings: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]


def latent_token_count(height: int, width: int, stride: int = 16) -> int:
    """Latent tokens of an image: one per ``stride`` x ``stride`` pixels (the analysis grid), rounded up."""
    return -(-height // stride) * -(-width // stride)


ImageInput = LoadedImage | Path | str | bytes | bytearray | np.ndarray | Image.Image
"""What ``semcodec.encode`` and ``Codec.encode`` take: a path, a file's bytes, a PIL image or an array."""


def load_image(source: ImageInput, name: str | None = None, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Any accepted input as 8-bit RGB, converted with the same warnings as a file, or a clear error
    (also for an image of more than ``max_pixels``)."""
    if isinstance(source, LoadedImage):
        return _checked(source.pixels, source.warnings, name or "image", max_pixels)
    if isinstance(source, (str, Path, bytes, bytearray)):
        return read_image(source, name, max_pixels)
    if isinstance(source, Image.Image):
        return _from_pil(source, name or "PIL image", max_pixels)
    if isinstance(source, np.ndarray):
        return from_array(source, name or "array", max_pixels)
    raise InputError(
        f"cannot encode a {type(source).__name__}: expected a path, the bytes of an image file, "
        "a PIL.Image or a numpy array (H x W x 3 uint8)"
    )


def from_array(array: np.ndarray, name: str = "array", max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """H x W x 3 uint8 as is; greyscale (H x W, H x W x 1), RGBA (H x W x 4) and 16-bit arrays converted
    with a warning, as files are; channel-first, float and other arrays refused with what was expected."""
    notes: list[str] = []
    shape = "x".join(map(str, array.shape))
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        raise InputError(f"{name} is {shape}, channels first: expected H x W x 3 (e.g. array.transpose(1, 2, 0))")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InputError(f"{name} is {shape}: expected H x W x 3 (RGB), H x W x 4 (RGBA) or H x W (greyscale)")
    if array.dtype == np.uint16:
        notes.append(f"16-bit {name} reduced to 8-bit")
        array = np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise InputError(
            f"{name} has dtype {array.dtype}: expected uint8 (0..255) or uint16; for floats in 0..1 pass "
            "(np.clip(a, 0, 1) * 255).round().astype(np.uint8)"
        )
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        notes.append(f"greyscale {name} converted to RGB")
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.float64) / 255.0
        if (alpha < 1).any():
            notes.append(f"RGBA {name} with transparency composited on white and coded as RGB")
        array = np.round(array[:, :, :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return _checked(array if array.flags.writeable else array.copy(), notes, name, max_pixels)


def _from_pil(img: Image.Image, name: str, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    notes = []
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"{name} has {img.n_frames} frames; coding the first")
    return _checked(_to_rgb8(ImageOps.exif_transpose(img), notes), notes, name, max_pixels)


def too_large(name: str, width: int, height: int, max_pixels: int) -> str:
    """The one line that refuses an image (or a file's declared size) above ``max_pixels``."""
    return f"{name} is too large ({width}x{height} is more than the {max_pixels}-pixel limit; see --max-pixels)"


def _checked(pixels: np.ndarray, notes: list[str], name: str, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    h, w = pixels.shape[:2]
    if h * w > max_pixels:
        raise ImageError(too_large(name, w, h, max_pixels))
    if h == 0 or w == 0:
        raise InputError(f"{name} is empty ({w}x{h})")
    return LoadedImage(np.ascontiguousarray(pixels), notes)


def read_image(source: Path | str | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode ``source`` (a path or the bytes of a file) to RGB uint8, honouring EXIF orientation.

    ``name`` is what error messages call the input (default: the path, or ``<stdin>`` for bytes);
    an image of more than ``max_pixels`` is refused before its pixels are decoded.
    """
    name = name or ("<stdin>" if isinstance(source, (bytes, bytearray)) else str(source))
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
            with Image.open(fp) as img:
                notes = []
                if getattr(img, "n_frames", 1) > 1:
                    notes.append(f"{name} has {img.n_frames} frames; coding the first")
                img.load()
                img = ImageOps.exif_transpose(img)
                pixels = _to_rgb8(img, notes)
    except FileNotFoundError:
        raise ImageError(f"no such file: {name}") from None
    except IsADirectoryError:
        raise ImageError(f"{name} is a directory, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} is too large (more than the {max_pixels}-pixel limit; see --max-pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot read {name}: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    return _checked(pixels, notes, name, max_pixels)


def _to_rgb8(img: Image.Image, notes: list[str]) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return _rgb_array(img)
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if mode != "F" else max(1.0, float(arr.max()))
        notes.append(f"{mode} image reduced to 8-bit RGB")
        grey = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if "A" in mode or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] == 255:  # fully opaque: nothing to composite
            return np.asarray(rgba.convert("RGB"), dtype=np.uint8).copy()
        notes.append(f"{mode} image with transparency composited on white and coded as RGB")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"), dtype=np.uint8).copy()
    if mode not in ("P",):
        notes.append(f"{mode} image converted to RGB")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


ROWS_PER_COPY = 256


def _rgb_array(img: Image.Image) -> np.ndarray:
    """An RGB image's pixels, copied a band of rows at a time: one (H, W, 3) array beside Pillow's
    own 4 bytes a pixel, not the two more whole copies ``np.asarray(img).copy()`` makes (a 100 MP
    photo: 300 MB, not 900 MB, on top of Pillow's 400 MB)."""
    width, height = img.size
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, ROWS_PER_COPY):
        bottom = min(height, top + ROWS_PER_COPY)
        band = img.crop((0, top, width, bottom)).tobytes()
        pixels[top:bottom] = np.frombuffer(band, dtype=np.uint8).reshape(bottom - top, width, 3)
    return pixels


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
