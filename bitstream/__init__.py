"""The semcodec file container: pure Python, explicit little-endian, checksummed.

No torch here: anyone can parse, inspect or validate a semcodec file with the standard library.
"""

from semcodec.bitstream.container import (
    FORMAT_VERSION,
    MAGIC,
    MAX_SIDE,
    READABLE_VERSIONS,
    Chunk,
    Header,
    pack,
    read_prefix,
    unpack,
)
from semcodec.errors import (
    BitstreamError,
    CorruptBitstreamError,
    TruncatedBitstreamError,
    UnsupportedVersionError,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_SIDE",
    "READABLE_VERSIONS",
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
