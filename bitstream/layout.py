"""The chunks of a semcodec file (format versions 1 and 2) and the base layer's prefix.

A file is ``header | Z | [MASK] | [TSPC] | YB | YE``: the side information, the kept-token mask of a
pruned file, the token space the encoder chose (absent: the codec's latent space), the base layer
(enough for the tokens target) and the enhancement layer. The base layer and everything it needs
come first, so a tokens decoder reads only a prefix of the file.
"""

from __future__ import annotations

import struct
import zlib

from semcodec.bitstream.container import Header
from semcodec.errors import BitstreamError

Z_CHUNK = "Z   "
MASK_CHUNK = "MASK"
TOKEN_SPACE_CHUNK = "TSPC"
BASE_CHUNK = "YB  "
ENHANCEMENT_CHUNK = "YE  "

BASE_PREFIX = struct.Struct("<HI")
"""Before the base layer's coded symbols: its channel count and the CRC32 of its symbols."""


def symbols_crc(data: bytes) -> int:
    """CRC32 of little-endian int32 symbols, as the header and the base prefix record it."""
    return zlib.crc32(data) & 0xFFFFFFFF


def pack_base(channels: int, crc: int, coded: bytes) -> bytes:
    return BASE_PREFIX.pack(channels, crc) + coded


def unpack_base(payload: bytes) -> tuple[int, int, bytes]:
    """``(channels, crc, coded symbols)`` of a base-layer chunk."""
    if len(payload) < BASE_PREFIX.size:
        raise BitstreamError("corrupt bitstream: base layer too short")
    channels, crc = BASE_PREFIX.unpack_from(payload)
    return channels, crc, payload[BASE_PREFIX.size :]


def token_space_of(header: Header) -> str | None:
    """The token space the encoder chose (``None``: the codec's latent space)."""
    payload = header.find(TOKEN_SPACE_CHUNK)
    if payload is None:
        return None
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError("corrupt bitstream: token space is not UTF-8") from None
