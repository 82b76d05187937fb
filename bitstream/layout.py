"""The chunks of a semcodec file (format versions 1 and 2) and the base layer's prefix.

A file is ``header | Z | [MASK] | [TSPC] | YB | YE``: the side information, the kept-token mask of a
pruned file, the token space the encoder chose (absent: the codec's latent space), the base layer
(enough for the latent-space tokens) and the enhancement layer. A file with a semantic layer
(``encode --token-space TOWER``, since 0.3.0) is ``header | TSPC | SEM | Z | [MASK] | YB | YE``: the
tower's own map, coded at the encoder, comes first. Whatever a tokens decoder needs comes before
what it does not, so it reads only a prefix of the file (:data:`TOKENS_PREFIX`).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from semcodec.bitstream.container import Header
from semcodec.errors import BitstreamError

Z_CHUNK = "Z   "
MASK_CHUNK = "MASK"
TOKEN_SPACE_CHUNK = "TSPC"
BASE_CHUNK = "YB  "
ENHANCEMENT_CHUNK = "YE  "
SEMANTIC_CHUNK = "SEM "

TOKENS_PREFIX = (SEMANTIC_CHUNK, BASE_CHUNK)
"""What a tokens decoder reads up to: the semantic layer when the file has one, else the base layer."""


def tokens_prefix(token_space: str | None) -> str | tuple[str, ...]:
    """The chunk a tokens decoder reads up to (``until`` of :func:`~semcodec.bitstream.unpack`):
    :data:`TOKENS_PREFIX` for the space the file serves; the base layer, which comes after a
    semantic layer, when another ``token_space`` is asked for (it may need the latent)."""
    return TOKENS_PREFIX if token_space is None else BASE_CHUNK


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


_SEMANTIC_FIXED = struct.Struct("<8sBII")
"""After the semantic layer's id: its weights hash, gain index, symbols CRC32 and the z stream's length."""


@dataclass(frozen=True)
class SemanticPayload:
    """A semantic-layer chunk: which layer (id, weights hash) at which gain wrote the two streams."""

    layer_id: str
    weights_hash: bytes
    gain_index: int
    crc: int
    z: bytes
    y: bytes


def pack_semantic(p: SemanticPayload) -> bytes:
    name = p.layer_id.encode("utf-8")
    if len(name) > 255 or len(p.weights_hash) != 8:
        raise ValueError("semantic layer id must fit 255 bytes and its hash 8")
    return bytes([len(name)]) + name + _SEMANTIC_FIXED.pack(p.weights_hash, p.gain_index, p.crc, len(p.z)) + p.z + p.y


def unpack_semantic(payload: bytes) -> SemanticPayload:
    try:
        end = 1 + payload[0]
        name = payload[1:end].decode("utf-8")
        weights_hash, gain, crc, z_len = _SEMANTIC_FIXED.unpack_from(payload, end)
    except (IndexError, struct.error, UnicodeDecodeError):
        raise BitstreamError("corrupt bitstream: semantic layer chunk is malformed") from None
    start = end + _SEMANTIC_FIXED.size
    if start + z_len > len(payload):
        raise BitstreamError("corrupt bitstream: semantic layer chunk is too short")
    return SemanticPayload(name, weights_hash, gain, crc, payload[start : start + z_len], payload[start + z_len :])
