"""Classical codecs through Pillow, each over a quality sweep, for side-by-side RD curves."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, features

Encoder = Callable[[Image.Image, float], bytes]


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def jpeg(img: Image.Image, q: float) -> bytes:
    return _save(img, "JPEG", quality=int(q))


def webp(img: Image.Image, q: float) -> bytes:
    return _save(img, "WEBP", quality=int(q), method=6)


def avif(img: Image.Image, q: float) -> bytes:
    return _save(img, "AVIF", quality=int(q), speed=6)


def avif_slow(img: Image.Image, q: float) -> bytes:
    """libavif at speed 2: what a user who wants the smallest file runs (speed 0 took 3x longer again
    for no smaller files on kodim01, 2026-12-06: 14.7 s against 4.7 s at speed 2 and 0.33 s at 6)."""
    return _save(img, "AVIF", quality=int(q), speed=2)


def jpeg_xl(img: Image.Image, q: float) -> bytes:
    """libjxl through pillow-jxl-plugin (``pip install 'semcodec[bench]'``), effort 7 as cjxl's default."""
    import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)

    return _save(img, "JXL", quality=int(q), effort=7)


def jpeg2000(img: Image.Image, bpp: float) -> bytes:
    return _save(img, "JPEG2000", quality_mode="rates", quality_layers=[24.0 / bpp], irreversible=True)


CODECS: dict[str, tuple[Encoder, list[float], str]] = {
    # name: (encoder, sweep, what the sweep means)
    "JPEG (Pillow)": (jpeg, [10, 20, 30, 40, 50, 60, 70, 80, 90], "quality, 4:2:0"),
    "WebP (Pillow, method 6)": (webp, [5, 15, 30, 50, 65, 75, 85, 92, 97], "quality"),
    "AVIF (Pillow/libavif, speed 6)": (avif, [15, 30, 45, 55, 65, 75, 85, 92], "quality, 4:2:0"),
    "AVIF (Pillow/libavif, speed 2)": (avif_slow, [15, 30, 45, 55, 65, 75, 85, 92], "quality, 4:2:0"),
    "JPEG XL (libjxl, effort 7)": (jpeg_xl, [3, 8, 15, 22, 30, 40, 55, 70], "quality"),
    "JPEG 2000 (Pillow/OpenJPEG)": (jpeg2000, [0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0], "target bpp"),
}


def available() -> dict[str, tuple[Encoder, list[float], str]]:
    need = {
        "JPEG (Pillow)": "jpg",
        "WebP (Pillow, method 6)": "webp",
        "AVIF (Pillow/libavif, speed 6)": "avif",
        "AVIF (Pillow/libavif, speed 2)": "avif",
        "JPEG 2000 (Pillow/OpenJPEG)": "jpg_2000",
    }
    return {name: spec for name, spec in CODECS.items() if _installed(need.get(name))}


def _installed(feature: str | None) -> bool:
    """A Pillow feature, or (``None``) the JPEG XL plugin."""
    if feature is not None:
        return bool(features.check(feature))
    import importlib.util

    return importlib.util.find_spec("pillow_jxl") is not None


def round_trip(encoder: Encoder, pixels: np.ndarray, setting: float) -> tuple[int, np.ndarray]:
    data = encoder(Image.fromarray(pixels), setting)
    if encoder is jpeg_xl:
        import pillow_jxl  # noqa: F401  (the decoder too)

    with Image.open(io.BytesIO(data)) as decoded:
        return len(data), np.array(decoded.convert("RGB"))  # a writable copy


EQUAL_BYTES: dict[str, Encoder] = {"JPEG": jpeg, "WebP": webp, "AVIF": avif}
"""The codecs benchmarks give semcodec's bytes (:func:`at_most_bytes`): tokens at equal bytes, per-image gains."""


def at_most_bytes(encoder: Encoder, pixels: np.ndarray, budget: int) -> tuple[int, np.ndarray]:
    """The highest quality setting whose file fits ``budget`` bytes (binary search over 1..100);
    the smallest file if none fits (then the classical codec gets *more* bytes than semcodec)."""
    lo, hi, best = 1, 100, None
    while lo <= hi:
        mid = (lo + hi) // 2
        size, decoded = round_trip(encoder, pixels, mid)
        if size <= budget:
            best, lo = (size, decoded), mid + 1
        else:
            hi = mid - 1
    return best if best is not None else round_trip(encoder, pixels, 1)
