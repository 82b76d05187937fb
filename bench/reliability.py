"""Reliability report: malformed bitstreams and images, how many were tried, how each ended.

Every case must end in a typed semcodec error (or, for a mutation that left the file valid, a
correct decode) within a bounded time; anything else is counted as a failure of semcodec.
"""

from __future__ import annotations

import io
import random
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import numpy as np
from PIL import Image

from semcodec import bitstream
from semcodec.bitstream.container import crc32
from semcodec.codec import Codec
from semcodec.codec.image_io import MAX_PIXELS, read_image
from semcodec.errors import BitstreamError, SemcodecError


def reseal(data: bytes | bytearray) -> bytes:
    """Recompute the header CRC and every chunk CRC, so a mutation gets past the checksums."""
    data = bytearray(data)
    (body_len,) = struct.unpack_from("<H", data, 6)
    head_end = 8 + body_len
    (version,) = struct.unpack_from("<H", data, 4)
    try:
        _, table = bitstream.container._parse_body(memoryview(bytes(data))[8:head_end], version)
    except (struct.error, UnicodeDecodeError, BitstreamError):
        table = []
    compact = version >= bitstream.COMPACT_FROM  # entries: code, varint length, CRC; else tag, u32, CRC
    sizes = [1 + len(bitstream.container.varint(length)) + 4 if compact else 12 for _tag, length, _crc in table]
    offset, pos = head_end + 4, head_end - sum(sizes)  # the chunk table ends the header
    for (_tag, length, _crc), size in zip(table, sizes, strict=True):
        struct.pack_into("<I", data, pos + size - 4, crc32(bytes(data[offset : offset + length])))
        offset += length
        pos += size
    struct.pack_into("<I", data, head_end, crc32(bytes(data[:head_end])))
    return bytes(data)


def mutations(valid: bytes, rng: random.Random) -> dict[str, Callable[[], bytes]]:
    header_end = len(valid) - bitstream.unpack(valid).payload_bytes

    def flip(lo: int, hi: int, resealed: bool = False) -> bytes:
        blob = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(lo * 8, hi * 8)
            blob[i // 8] ^= 1 << (i % 8)
        return reseal(blob) if resealed else bytes(blob)

    def splice(insert: bool) -> bytes:
        i = rng.randrange(len(valid))
        extra = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        return valid[:i] + extra + valid[i:] if insert else valid[:i] + valid[i + rng.randint(1, 16) :]

    return {
        "truncated at a random byte": lambda: valid[: rng.randrange(len(valid))],
        "1-8 bit flips in the header": lambda: flip(0, header_end),
        "1-8 bit flips in the payload": lambda: flip(header_end, len(valid)),
        "payload bit flips, CRCs recomputed": lambda: flip(header_end, len(valid), resealed=True),
        "header bit flips, CRCs recomputed": lambda: flip(8, header_end - 4, resealed=True),
        "random bytes inserted": lambda: splice(True),
        "random bytes deleted": lambda: splice(False),
        "random garbage (0-512 bytes)": lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(513))),
    }


def _outcome(codec: Codec, data: bytes) -> str:
    try:
        pixels = codec.decode(data)
    except SemcodecError as exc:
        return type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - counted as a semcodec bug in the report
        return f"UNTYPED {type(exc).__name__}"
    header = bitstream.unpack(data)
    return "decoded (still valid)" if pixels.shape == (header.height, header.width, 3) else "WRONG SIZE"


def bitstream_report(codec: Codec, valid: bytes, cases: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for family, make in mutations(valid, rng).items():
        outcomes, slowest = Counter(), 0.0
        for _ in range(cases):
            data = make()
            start = time.perf_counter()
            outcomes[_outcome(codec, data)] += 1
            slowest = max(slowest, time.perf_counter() - start)
        rows.append({"family": family, "count": cases, "outcomes": dict(outcomes), "max_s": slowest})
    return rows


def bad_images() -> dict[str, bytes]:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))

    def save(img: Image.Image, fmt: str, **kw) -> bytes:
        buffer = io.BytesIO()
        img.save(buffer, format=fmt, **kw)
        return buffer.getvalue()

    png, jpeg = save(rgb, "PNG"), save(rgb, "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    side = int(MAX_PIXELS**0.5) + 100
    return {
        "zero-byte file": b"",
        "text file named .png": b"hello, not an image",
        "truncated PNG": png[: len(png) // 2],
        "truncated JPEG": jpeg[: len(jpeg) // 2],
        "CMYK JPEG": save(rgb.convert("CMYK"), "JPEG"),
        "16-bit greyscale PNG": save(Image.fromarray(np.full((40, 40), 40000, np.uint16)), "PNG"),
        "palette PNG with transparency": save(pal, "PNG", transparency=0),
        "animated GIF": save(rgb, "GIF", save_all=True, append_images=[rgb.rotate(90)]),
        "animated WebP": save(rgb, "WEBP", save_all=True, append_images=[rgb.rotate(90)]),
        "JPEG with EXIF rotation": save(rgb, "JPEG", exif=exif.tobytes()),
        f"decompression bomb ({side}x{side} PNG)": save(Image.new("L", (side, side)), "PNG"),
    }


def image_report(codec: Codec) -> list[dict]:
    rows = []
    for name, data in bad_images().items():
        start = time.perf_counter()
        try:
            image = read_image(data, name=name)
            result = codec.encode(image, 1)
            shape = codec.decode(result.data).shape
            outcome = f"coded {shape[1]}x{shape[0]}" + (f"; warning: {image.warnings[0]}" if image.warnings else "")
        except SemcodecError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001
            outcome = f"UNTYPED {type(exc).__name__}: {exc}"
        rows.append({"case": name, "outcome": outcome, "seconds": time.perf_counter() - start})
    return rows


def tables(bit_rows: list[dict], image_rows: list[dict]) -> str:
    lines = ["| mutation of a valid bitstream | cases | outcomes | slowest s |", "|---|---:|---|---:|"]
    totals: defaultdict[str, int] = defaultdict(int)
    for r in bit_rows:
        for k, v in r["outcomes"].items():
            totals[k] += v
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        lines.append(f"| {r['family']} | {r['count']} | {outcomes} | {r['max_s']:.3f} |")
    lines.append(
        f"| **all** | {sum(totals.values())} | " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) + " | |"
    )
    lines += ["", "| bad image input | outcome | seconds |", "|---|---|---:|"]
    for r in image_rows:
        lines.append(f"| {r['case']} | {r['outcome']} | {r['seconds']:.2f} |")
    return "\n".join(lines)
