"""The chunks of a semcodec file (format versions 1 to 6) and the base layer's prefix.

A file is ``header | Z | [MASK] | [TSPC] | YB | YE``: the side information, the kept-token mask of a
pruned file, the token space the encoder chose (absent: the codec's latent space), the base layer
(enough for the latent-space tokens) and the enhancement layer. A file with a semantic layer
(``encode --token-space TOWER``, since 0.3.0) is ``header | SEM | Z | [MASK] | YB | YE``: the
tower's own map, coded at the encoder, comes first (releases 0.3.0-3.1.0 also wrote ``TSPC`` before
it, naming the tower the layer's id already names). Whatever a tokens decoder needs comes before
what it does not, so it reads only a prefix of the file (:data:`TOKENS_PREFIX`).

From format 5 an image whose latent grid is larger than :data:`LATENT_TILE` on a side is coded in
tiles of that many latent positions (2048 pixels), each with its own z and y streams, as if it were
an image of its own; ``Z``, ``YB`` and ``YE`` then hold one stream per tile, in row-major tile
order, each after its length (:func:`pack_streams`). Format 6 (the lean header) is written for every
file; 4 and 5 are read.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from semcodec.bitstream.container import COMPACT_FROM, SEMANTIC_GEOMETRY_FROM, TILED_FROM, Header
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


LATENT_TILE = 128
"""Latent positions per tile side (format 5 on): 2048 pixels, a 4 MP tile's working set at a time."""
_STREAM_LENGTH = struct.Struct("<I")


def latent_tiles(rows: int, cols: int, version: int) -> list[tuple[int, int, int, int]]:
    """``(top, left, bottom, right)`` of the latent tiles of a ``rows x cols`` latent grid (the
    padded image's, a multiple of the hyperprior's 4), row-major: one tile before format 5 or when
    the grid fits one."""
    if version < TILED_FROM or (rows <= LATENT_TILE and cols <= LATENT_TILE):
        return [(0, 0, rows, cols)]
    return [
        (top, left, min(top + LATENT_TILE, rows), min(left + LATENT_TILE, cols))
        for top in range(0, rows, LATENT_TILE)
        for left in range(0, cols, LATENT_TILE)
    ]


def pack_streams(streams: list[bytes]) -> bytes:
    """One chunk's payload from the tiles' streams: a single stream as it is, several each after its
    little-endian uint32 length."""
    if len(streams) == 1:
        return streams[0]
    return b"".join(_STREAM_LENGTH.pack(len(s)) + s for s in streams)


def unpack_streams(payload: bytes, count: int, what: str) -> list[bytes]:
    """The ``count`` tile streams of a chunk (:func:`pack_streams`), or a clear error."""
    if count == 1:
        return [payload]
    streams, start = [], 0
    for _ in range(count):
        if start + _STREAM_LENGTH.size > len(payload):
            raise BitstreamError(f"corrupt bitstream: {what} chunk ends before its tile {len(streams) + 1} of {count}")
        (length,) = _STREAM_LENGTH.unpack_from(payload, start)
        start += _STREAM_LENGTH.size
        if start + length > len(payload):
            raise BitstreamError(f"corrupt bitstream: {what} chunk's tile {len(streams) + 1} of {count} is cut short")
        streams.append(payload[start : start + length])
        start += length
    if start != len(payload):
        raise BitstreamError(f"corrupt bitstream: {what} chunk has bytes after its {count} tiles")
    return streams


BASE_PREFIX = struct.Struct("<HI")
"""Before the base layer's coded symbols: its channel count and the CRC32 of its symbols."""


def symbols_crc(data: bytes, running: int = 0) -> int:
    """CRC32 of little-endian int32 symbols, as the header and the base prefix record it; ``running``:
    the CRC of the symbols before ``data`` (so long runs can be checked a piece at a time)."""
    return zlib.crc32(data, running) & 0xFFFFFFFF


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
"""Up to format 5, after the semantic layer's id: its weights hash, gain index, symbols CRC32 and the
z stream's length."""
_SEMANTIC_FIXED_JOINT = struct.Struct("<8sBI")
"""Format 6 on, after the id: the weights hash, gain index and symbols CRC32 (z and y share one stream)."""
_SEMANTIC_GEOMETRY = struct.Struct("<BBBB")
"""Format 4 on, after those: the tower map's grid (rows, columns), the reach and whether a kept-token
bitmap follows (1) or every token is kept (0)."""
SQUARE_MAP_GRID = (14, 14)
"""The map grid of every format-3 semantic layer (the tower squashed the photo to 224 x 224)."""


@dataclass(frozen=True)
class SemanticPayload:
    """A semantic-layer chunk: which layer (id, weights hash) at which gain wrote the two streams.

    From format 4 it also says the tower map's grid (the photo's shape, ``map_grid``) and, for a file
    encoded with ``--tokens N``, which of the tower's output tokens the machine gets (``kept``: flat
    row-major indices on the token grid, half the map's in each direction). Then only the latent
    positions within ``reach`` (Chebyshev distance on the latent grid, which is the token grid) of a
    kept token are coded; the others are the prior's means."""

    layer_id: str
    weights_hash: bytes
    gain_index: int
    crc: int
    z: bytes
    y: bytes
    map_grid: tuple[int, int] = SQUARE_MAP_GRID
    kept: tuple[int, ...] | None = None
    reach: int = 0
    joint: bool = False
    """Format 6 on: one range-coded stream, ``y``, whose first symbols are z's (``z`` is empty): one
    coder's flush and the z length fewer."""

    @property
    def token_grid(self) -> tuple[int, int]:
        return -(-self.map_grid[0] // 2), -(-self.map_grid[1] // 2)


def semantic_joint(version: int) -> bool:
    """Whether a semantic chunk of this format version codes z and y in one stream."""
    return version >= COMPACT_FROM


def pack_semantic(p: SemanticPayload, version: int) -> bytes:
    name = p.layer_id.encode("utf-8")
    if len(name) > 255 or len(p.weights_hash) != 8:
        raise ValueError("semantic layer id must fit 255 bytes and its hash 8")
    if p.joint != semantic_joint(version) or (p.joint and p.z):
        raise ValueError(f"format version {version} codes z and y {'in one' if semantic_joint(version) else 'apart'}")
    if p.joint:
        fields = _SEMANTIC_FIXED_JOINT.pack(p.weights_hash, p.gain_index, p.crc)
    else:
        fields = _SEMANTIC_FIXED.pack(p.weights_hash, p.gain_index, p.crc, len(p.z))
    fixed = bytes([len(name)]) + name + fields
    if version < SEMANTIC_GEOMETRY_FROM:
        if p.map_grid != SQUARE_MAP_GRID or p.kept is not None:
            raise ValueError(f"format version {version} has only square, unpruned semantic layers")
        return fixed + p.z + p.y
    rows, cols = p.map_grid
    if not (0 < rows < 256 and 0 < cols < 256 and 0 <= p.reach < 256):
        raise ValueError("semantic map grid and reach must each fit one byte")
    geometry = _SEMANTIC_GEOMETRY.pack(rows, cols, p.reach, p.kept is not None)
    if p.kept is not None:
        geometry += _pack_bitmap(p.kept, p.token_grid[0] * p.token_grid[1])
    return fixed + geometry + p.z + p.y


def unpack_semantic(payload: bytes, version: int) -> SemanticPayload:
    try:
        end = 1 + payload[0]
        name = payload[1:end].decode("utf-8")
        joint = semantic_joint(version)
        if joint:
            weights_hash, gain, crc = _SEMANTIC_FIXED_JOINT.unpack_from(payload, end)
            start, z_len = end + _SEMANTIC_FIXED_JOINT.size, 0
        else:
            weights_hash, gain, crc, z_len = _SEMANTIC_FIXED.unpack_from(payload, end)
            start = end + _SEMANTIC_FIXED.size
        map_grid, kept, reach = SQUARE_MAP_GRID, None, 0
        if version >= SEMANTIC_GEOMETRY_FROM:
            rows, cols, reach, pruned = _SEMANTIC_GEOMETRY.unpack_from(payload, start)
            start += _SEMANTIC_GEOMETRY.size
            if rows == 0 or cols == 0 or pruned > 1:
                raise BitstreamError("corrupt bitstream: semantic layer geometry is malformed")
            map_grid = (rows, cols)
            if pruned:
                count = -(-rows // 2) * -(-cols // 2)
                size = -(-count // 8)
                if start + size > len(payload):
                    raise IndexError
                kept = _unpack_bitmap(payload[start : start + size], count)
                start += size
    except (IndexError, struct.error, UnicodeDecodeError):
        raise BitstreamError("corrupt bitstream: semantic layer chunk is malformed") from None
    if start + z_len > len(payload):
        raise BitstreamError("corrupt bitstream: semantic layer chunk is too short")
    z, y = payload[start : start + z_len], payload[start + z_len :]
    return SemanticPayload(name, weights_hash, gain, crc, z, y, map_grid, kept, reach, joint)


def _pack_bitmap(indices: tuple[int, ...], count: int) -> bytes:
    """Flat indices < ``count`` as a little-endian bitmap of ``ceil(count / 8)`` bytes."""
    if not indices or len(set(indices)) != len(indices) or not all(0 <= i < count for i in indices):
        raise ValueError(f"kept tokens must be 1..{count} distinct indices below {count}")
    bits = sum(1 << i for i in indices)
    return bits.to_bytes(-(-count // 8), "little")


def _unpack_bitmap(data: bytes, count: int) -> tuple[int, ...]:
    bits = int.from_bytes(data, "little")
    if bits == 0 or bits >> count:
        raise BitstreamError("corrupt bitstream: semantic layer kept-token bitmap is malformed")
    return tuple(i for i in range(count) if bits >> i & 1)
