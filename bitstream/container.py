"""Binary layout of a semcodec file (format versions 1 to 6).

All integers little-endian::

    offset  size  field
    0       4     magic b"SMCD"
    4       2     format version (u16)
    6       2     header body length in bytes (u16)
    8       ...   header body:
                    quality u8, flags u8,
                    model id: u8 length + UTF-8 (a stable name, e.g. "vit-hp-small"),
                    weights hash: 8 bytes (sha256 prefix of the weights file),
                    height u32, width u32 (original image size),
                    symbols CRC32 u32 (of every decoded symbol, int32 LE, in coding order),
                    chunk count u8, then per chunk: tag 4 bytes ASCII, length u32, CRC32 u32
    ...     4     CRC32 of everything above (magic through chunk table)
    ...           chunk payloads, concatenated in table order

From version 6 the header body is leaner, with every checksum kept: height and width are varints
(unsigned LEB128, minimal), and each chunk's table entry is its tag's one-byte code
(:data:`CHUNK_TAGS`), its length as a varint and its CRC32 u32 (7 bytes instead of 12 for a
chunk under 16 KiB; 24 bytes less for a typical default file).

Versions 1 to 3 share this layout and differ in how the codec models the latent: version 1
rounded each std up to the model's scale table, version 2 codes with the exact fixed-point std,
version 3 also leaves out the latent tokens wholly in the padding to the stride (their pixels are
cropped away; the decoder fills them with the mean); 4 and 5 change chunks, not this layout
(:mod:`~semcodec.bitstream.layout`). This module writes :data:`FORMAT_VERSION` and reads every
version in :data:`READABLE_VERSIONS`; :attr:`Header.version` tells the codec which.

The header is self-describing (tfc's habit): decoding needs no model flag. Anything that does not
fit this layout raises a subclass of :class:`~semcodec.errors.BitstreamError`; nothing is
allocated from a size field before the sizes are checked against the real file length.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from semcodec.errors import (
    BitstreamError,
    CorruptBitstreamError,
    TruncatedBitstreamError,
    UnsupportedVersionError,
)

MAGIC = b"SMCD"
FORMAT_VERSION = 6
"""The version this build writes (:func:`pack`'s default), for every file since 4.0.0 (3.x wrote 4,
and 5 for tiled files)."""
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
FIRST_WRITTEN_BY = {1: "0.1.0", 2: "0.2.0", 3: "1.0.0", 4: "2.0.0", 5: "3.0.0", 6: "4.0.0"}
"""The first semcodec release that wrote each format version: a reader older than that refuses it."""
PADDING_UNCODED_FROM = 3
"""The first format version whose files do not code the latent tokens wholly in the padding."""
SEMANTIC_GEOMETRY_FROM = 4
"""The first format version whose semantic layer keeps the photo's shape and may code only the
tokens the encoder kept (:class:`~semcodec.bitstream.layout.SemanticPayload`)."""
TILED_FROM = 5
"""The first format version that codes a large image's latent in independent tiles
(:func:`~semcodec.bitstream.layout.latent_tiles`), so coders hold one tile's working set at a time."""
COMPACT_FROM = 6
"""The first format version with the lean header (varint sizes, one-byte chunk tags) and a semantic
layer in one range-coded stream (:func:`~semcodec.bitstream.layout.pack_semantic`)."""
CHUNK_TAGS = ("SEM ", "Z   ", "MASK", "TSPC", "YB  ", "YE  ")
"""Format 6 on, a chunk's tag is written as its position here plus one; a new chunk kind is
appended (a code is never reused)."""
MAX_SIDE = 1 << 16
"""Largest height/width a header may declare; larger sizes are refused before any allocation."""

KNOWN_FLAGS = 0
"""Format versions 1 to 6 define no flag bits (layers and masks are chunks); any set bit is refused."""
WEIGHTS_HASH_BYTES = 8
_PREFIX = struct.Struct("<4sHH")
_FIXED = struct.Struct(f"<{WEIGHTS_HASH_BYTES}sIII")  # weights hash, height, width, symbols crc
_CHUNK = struct.Struct("<4sII")
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class Chunk:
    """One length-prefixed, checksummed payload (e.g. ``"Z   "`` side info, ``"YB  "`` base layer)."""

    tag: str
    payload: bytes

    def __post_init__(self) -> None:
        if len(self.tag.encode("ascii")) != 4:
            raise ValueError(f"chunk tag must be 4 ASCII characters, got {self.tag!r}")


@dataclass(frozen=True)
class Header:
    """Everything a decoder needs besides the chunk payloads."""

    model_id: str
    weights_hash: bytes
    quality: int
    height: int
    width: int
    symbols_crc: int
    flags: int = 0
    chunks: tuple[Chunk, ...] = field(default_factory=tuple)
    version: int = FORMAT_VERSION
    header_bytes: int = field(default=0, compare=False)
    """Size of the header as read (set by :func:`unpack`; not part of equality)."""

    def find(self, tag: str) -> bytes | None:
        """Payload of the optional chunk named ``tag``, or ``None``."""
        return next((c.payload for c in self.chunks if c.tag == tag), None)

    def chunk(self, tag: str) -> bytes:
        """Payload of the chunk named ``tag``; a missing chunk is a corrupt file."""
        payload = self.find(tag)
        if payload is None:
            raise CorruptBitstreamError(f"bitstream has no {tag.strip()!r} chunk")
        return payload

    @property
    def payload_bytes(self) -> int:
        return sum(len(c.payload) for c in self.chunks)


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def pack(header: Header) -> bytes:
    """Serialise ``header`` and its chunks into the bytes of a semcodec file."""
    model_id = header.model_id.encode("utf-8")
    if not 0 < len(model_id) < 256:
        raise ValueError("model id must be 1..255 bytes of UTF-8")
    if len(header.weights_hash) != WEIGHTS_HASH_BYTES:
        raise ValueError(f"weights hash must be {WEIGHTS_HASH_BYTES} bytes")
    if not (1 <= header.height <= MAX_SIDE and 1 <= header.width <= MAX_SIDE):
        raise ValueError(f"image size {header.width}x{header.height} outside 1..{MAX_SIDE}")
    if header.version not in READABLE_VERSIONS:
        raise ValueError(f"format version must be one of {READABLE_VERSIONS}")
    if not 0 <= header.quality < 256 or not 0 <= header.flags < 256 or len(header.chunks) > 255:
        raise ValueError("quality, flags and chunk count must each fit one byte")
    body = bytearray(struct.pack("<BBB", header.quality, header.flags, len(model_id)))
    body += model_id
    if header.version >= COMPACT_FROM:
        body += header.weights_hash + varint(header.height) + varint(header.width)
        body += _CRC.pack(header.symbols_crc)
    else:
        body += _FIXED.pack(header.weights_hash, header.height, header.width, header.symbols_crc)
    body += struct.pack("<B", len(header.chunks))
    for c in header.chunks:
        if header.version >= COMPACT_FROM:
            if c.tag not in CHUNK_TAGS:
                raise ValueError(f"format version {header.version} has no chunk {c.tag!r}")
            body += bytes([CHUNK_TAGS.index(c.tag) + 1]) + varint(len(c.payload)) + _CRC.pack(crc32(c.payload))
        else:
            body += _CHUNK.pack(c.tag.encode("ascii"), len(c.payload), crc32(c.payload))
    head = _PREFIX.pack(MAGIC, header.version, len(body)) + bytes(body)
    return head + _CRC.pack(crc32(head)) + b"".join(c.payload for c in header.chunks)


def unpack(data: bytes, until: str | tuple[str, ...] | None = None) -> Header:
    """Parse and verify a semcodec file; raise a :class:`BitstreamError` subclass if it is not one.

    With ``until`` (a chunk tag, or tags in order of preference: the first one the file has), only
    the chunks up to and including that one are read and verified, and ``data`` may be just that
    prefix of the file: a layered decoder (tokens from the base layer) needs no more bytes than that.
    """
    data = bytes(data)
    if len(data) == 0:
        raise TruncatedBitstreamError("empty file: not a semcodec bitstream")
    if len(data) < _PREFIX.size:
        if MAGIC.startswith(data[:4]):
            raise TruncatedBitstreamError(f"truncated bitstream: {len(data)} bytes, header needs more")
        raise BitstreamError("not a semcodec bitstream (bad magic)")
    magic, version, body_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError("not a semcodec bitstream (bad magic)")
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersionError(
            f"bitstream format version {version} is not supported (this semcodec reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); "
            f"{'upgrade semcodec' if version > FORMAT_VERSION else 're-encode'}"
        )
    head_end = _PREFIX.size + body_len
    if len(data) < head_end + _CRC.size:
        raise TruncatedBitstreamError(f"truncated bitstream: {len(data)} bytes, header needs {head_end + 4}")
    (stored_crc,) = _CRC.unpack_from(data, head_end)
    if crc32(data[:head_end]) != stored_crc:
        raise CorruptBitstreamError("corrupt bitstream: header checksum mismatch")
    body = memoryview(data)[_PREFIX.size : head_end]
    try:
        header, table = _parse_body(body, version)
    except (struct.error, UnicodeDecodeError) as exc:  # CRC matched but fields do not fit: malformed
        raise CorruptBitstreamError(f"corrupt bitstream: malformed header ({exc})") from None
    offset = head_end + _CRC.size
    if until is not None:
        stop = _stop_index(table, until)
        if stop is None:
            last = until if isinstance(until, str) else until[-1]
            raise CorruptBitstreamError(f"bitstream has no {last.strip()!r} chunk")
        table = table[: stop + 1]
    expected = offset + sum(length for _, length, _ in table)
    if len(data) < expected:
        raise TruncatedBitstreamError(f"truncated bitstream: {len(data)} of {expected} bytes")
    if len(data) > expected and until is None:
        raise CorruptBitstreamError(f"corrupt bitstream: {len(data) - expected} unexpected trailing bytes")
    chunks = []
    for tag, length, crc in table:
        payload = data[offset : offset + length]
        offset += length
        if crc32(payload) != crc:
            raise CorruptBitstreamError(f"corrupt bitstream: checksum mismatch in chunk {tag.strip()!r}")
        chunks.append(Chunk(tag, payload))
    return Header(**header, chunks=tuple(chunks), version=version, header_bytes=head_end + _CRC.size)


def read_prefix(stream: BinaryIO, until: str | tuple[str, ...]) -> bytes:
    """Read from ``stream`` only the bytes :func:`unpack` needs to reach chunk ``until``.

    The length fields are bounded by what the stream really holds: a lying header makes
    :func:`unpack` raise, it never makes this allocate more than the file.
    """
    data = stream.read(_PREFIX.size)
    if len(data) == _PREFIX.size:
        magic, version, body_len = _PREFIX.unpack(data)
        if magic == MAGIC:
            data += stream.read(body_len + _CRC.size)
            try:
                _, table = _parse_body(memoryview(data)[_PREFIX.size : _PREFIX.size + body_len], version)
            except (struct.error, UnicodeDecodeError, BitstreamError):
                table = []
            stop = _stop_index(table, until)
            if stop is not None:
                data += stream.read(sum(length for _, length, _ in table[: stop + 1]))
    return data


def _stop_index(table: list[tuple[str, int, int]], until: str | tuple[str, ...]) -> int | None:
    """Index in ``table`` of the chunk ``until`` names: a tag, or tags in order of preference (the
    first one the file has), ``None`` if it has none of them."""
    tags = [tag for tag, _, _ in table]
    for tag in (until,) if isinstance(until, str) else until:
        if tag in tags:
            return tags.index(tag)
    return None


def varint(value: int) -> bytes:
    """``value`` (0 .. 2^32 - 1) as an unsigned LEB128 varint, minimal: 7 bits a byte, low first."""
    if not 0 <= value < 1 << 32:
        raise ValueError(f"varint {value} outside 0..2^32-1")
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; ``struct.error`` when it is cut short, longer
    than 5 bytes or not minimal (every value has one encoding, so a file packs back to its bytes)."""
    value = 0
    for i in range(5):
        if pos + i >= len(data):
            raise struct.error("varint runs past the header")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise struct.error("varint is not minimal")
            if value >= 1 << 32:
                raise struct.error("varint above 2^32-1")
            return value, pos + i + 1
    raise struct.error("varint longer than 5 bytes")


def _parse_body(body: memoryview, version: int) -> tuple[dict, list[tuple[str, int, int]]]:
    quality, flags, id_len = struct.unpack_from("<BBB", body, 0)
    pos = 3
    if pos + id_len > len(body):
        raise struct.error("model id runs past the header")
    model_id = bytes(body[pos : pos + id_len]).decode("utf-8")
    pos += id_len
    if version >= COMPACT_FROM:
        weights_hash = bytes(body[pos : pos + WEIGHTS_HASH_BYTES])
        height, pos = read_varint(body, pos + WEIGHTS_HASH_BYTES)
        width, pos = read_varint(body, pos)
        (symbols_crc,) = _CRC.unpack_from(body, pos)
        pos += _CRC.size
    else:
        weights_hash, height, width, symbols_crc = _FIXED.unpack_from(body, pos)
        pos += _FIXED.size
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise CorruptBitstreamError(f"corrupt bitstream: image size {width}x{height} outside 1..{MAX_SIDE}")
    if flags & ~KNOWN_FLAGS:
        raise CorruptBitstreamError(f"corrupt bitstream: unknown flags {flags:#04x}")
    (n_chunks,) = struct.unpack_from("<B", body, pos)
    pos += 1
    table = []
    for _ in range(n_chunks):
        if version >= COMPACT_FROM:
            (code,) = struct.unpack_from("<B", body, pos)
            if not 1 <= code <= len(CHUNK_TAGS):
                raise CorruptBitstreamError(f"corrupt bitstream: unknown chunk code {code}")
            length, pos = read_varint(body, pos + 1)
            (crc,) = _CRC.unpack_from(body, pos)
            pos += _CRC.size
            table.append((CHUNK_TAGS[code - 1], length, crc))
            continue
        tag, length, crc = _CHUNK.unpack_from(body, pos)
        pos += _CHUNK.size
        table.append((tag.decode("ascii"), length, crc))
    if pos != len(body):
        raise struct.error(f"{len(body) - pos} unexplained header bytes")
    fields = dict(
        model_id=model_id,
        weights_hash=weights_hash,
        quality=quality,
        flags=flags,
        height=height,
        width=width,
        symbols_crc=symbols_crc,
    )
    return fields, table
