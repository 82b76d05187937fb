"""Image input/output: anything Pillow reads becomes 8-bit RGB (with a warning when converted)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from semcodec.errors import ImageError

MAX_PIXELS = 25_000_000
"""Largest image semcodec codes (e.g. 6000 x 4000). A 4000 x 3000 photo peaks near 6 GB in the
transforms, so this bound keeps a 24 GB machine safe. Pillow's decompression-bomb guard uses it too."""


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


def read_image(source: Path | str | bytes, name: str | None = None) -> LoadedImage:
    """Decode ``source`` (a path or the bytes of a file) to RGB uint8, honouring EXIF orientation.

    ``name`` is what error messages call the input (default: the path, or ``<stdin>`` for bytes).
    """
    name = name or ("<stdin>" if isinstance(source, (bytes, bytearray)) else str(source))
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
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
        raise ImageError(f"{name} is too large (more than {MAX_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot read {name}: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    h, w = pixels.shape[:2]
    if h * w > MAX_PIXELS:
        raise ImageError(f"{name} is too large ({w}x{h} > {MAX_PIXELS} pixels)")
    return LoadedImage(pixels, notes)


def _to_rgb8(img: Image.Image, notes: list[str]) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if mode != "F" else max(1.0, float(arr.max()))
        notes.append(f"{mode} image reduced to 8-bit RGB")
        grey = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if "A" in mode or (mode == "P" and "transparency" in img.info):
        notes.append(f"{mode} image with transparency composited on white and coded as RGB")
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"), dtype=np.uint8).copy()
    if mode not in ("P",):
        notes.append(f"{mode} image converted to RGB")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
