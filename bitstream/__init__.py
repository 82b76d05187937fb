"""The semcodec file container: pure Python, explicit little-endian, checksummed.

No torch here: anyone can parse, inspect or validate a semcodec file with the standard library.
"""

from semcodec.bitstream.container import (
    FORMAT_VERSION,
    MAGIC,
    MAX_SIDE,
    PADDING_UNCODED_FROM,
    READABLE_VERSIONS,
    SEMANTIC_GEOMETRY_FROM,
    Chunk,
    Header,
    pack,
    read_prefix,
    unpack,
)
from semcodec.bitstream.layout import (
    BASE_CHUNK,
    ENHANCEMENT_CHUNK,
    MASK_CHUNK,
    SEMANTIC_CHUNK,
    TOKEN_SPACE_CHUNK,
    TOKENS_PREFIX,
    Z_CHUNK,
    SemanticPayload,
    pack_base,
    pack_semantic,
    symbols_crc,
    token_space_of,
    tokens_prefix,
    unpack_base,
    unpack_semantic,
)
from semcodec.errors import (
    BitstreamError,
    CorruptBitstreamError,
    TruncatedBitstreamError,
    UnsupportedVersionError,
)

__all__ = [
    "BASE_CHUNK",
    "ENHANCEMENT_CHUNK",
    "MASK_CHUNK",
    "SEMANTIC_CHUNK",
    "TOKEN_SPACE_CHUNK",
    "TOKENS_PREFIX",
    "Z_CHUNK",
    "SemanticPayload",
    "pack_base",
    "pack_semantic",
    "symbols_crc",
    "token_space_of",
    "tokens_prefix",
    "unpack_base",
    "unpack_semantic",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_SIDE",
    "PADDING_UNCODED_FROM",
    "READABLE_VERSIONS",
    "SEMANTIC_GEOMETRY_FROM",
    "BitstreamError",
    "Chunk",
    "CorruptBitstreamError",
    "Header",
    "TruncatedBitstreamError",
    "UnsupportedVersionError",
    "pack",
    "read_prefix",
    "unpack",
]
