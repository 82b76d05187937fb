"""The container: exact round trip, and a typed error for every malformed file."""

from __future__ import annotations

import random
import struct

import pytest

from semcodec import bitstream
from semcodec.bitstream import (
    BitstreamError,
    Chunk,
    CorruptBitstreamError,
    Header,
    TruncatedBitstreamError,
    UnsupportedVersionError,
)


def make_header(**kw) -> Header:
    fields = dict(
        model_id="vit-hp-small",
        weights_hash=bytes(range(8)),
        quality=3,
        height=512,
        width=768,
        symbols_crc=0xDEADBEEF,
        chunks=(Chunk("Z   ", b"zz" * 10), Chunk("YB  ", bytes(range(256)) * 3)),
    )
    fields.update(kw)
    return Header(**fields)


def test_round_trip_is_exact():
    header = make_header()
    data = bitstream.pack(header)
    assert bitstream.unpack(data) == header
    assert bitstream.pack(bitstream.unpack(data)) == data
    assert data[:4] == b"SMCD"


def test_bitstream_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, semcodec.bitstream; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_empty_file():
    with pytest.raises(TruncatedBitstreamError, match="empty"):
        bitstream.unpack(b"")


@pytest.mark.parametrize("cut", [1, 3, 7, 8, 20, 40])
def test_truncated_header(cut):
    with pytest.raises(TruncatedBitstreamError):
        bitstream.unpack(bitstream.pack(make_header())[:cut])


def test_every_truncation_is_refused():
    data = bitstream.pack(make_header())
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            bitstream.unpack(data[:cut])


def test_trailing_bytes_are_refused():
    with pytest.raises(CorruptBitstreamError, match="trailing"):
        bitstream.unpack(bitstream.pack(make_header()) + b"\0")


def test_garbage_and_foreign_files():
    with pytest.raises(BitstreamError, match="magic"):
        bitstream.unpack(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(BitstreamError):
        bitstream.unpack(bytes(random.Random(0).randrange(256) for _ in range(500)))


def test_future_version():
    data = bytearray(bitstream.pack(make_header()))
    struct.pack_into("<H", data, 4, bitstream.FORMAT_VERSION + 1)
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        bitstream.unpack(bytes(data))


def test_version_1_files_still_parse_and_say_so():
    """Version 1 (stds rounded to the scale table) is still read; the codec picks its stds by it."""
    header = make_header(version=1)
    data = bitstream.pack(header)
    assert struct.unpack_from("<H", data, 4)[0] == 1
    assert bitstream.unpack(data).version == 1
    assert bitstream.unpack(bitstream.pack(make_header())).version == bitstream.FORMAT_VERSION == 6


def test_version_0_is_refused_with_re_encode():
    data = bytearray(bitstream.pack(make_header()))
    struct.pack_into("<H", data, 4, 0)
    with pytest.raises(UnsupportedVersionError, match="re-encode"):
        bitstream.unpack(bytes(data))


def test_pack_refuses_an_unknown_version():
    with pytest.raises(ValueError, match="format version"):
        bitstream.pack(make_header(version=bitstream.FORMAT_VERSION + 1))


def test_every_single_bit_flip_is_detected():
    data = bitstream.pack(make_header(chunks=(Chunk("YB  ", b"payload!"),)))
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            bitstream.unpack(bytes(flipped))


def test_huge_declared_size_is_refused_before_allocation():
    with pytest.raises(ValueError, match=f"x{bitstream.MAX_SIDE + 1} outside 1..{bitstream.MAX_SIDE}"):
        bitstream.pack(make_header(height=bitstream.MAX_SIDE + 1))
    # forge headers with a valid CRC that declare 100000 x 100000: format 5 (u32 sizes), format 6 (varints)
    body_start = 8 + 3 + len("vit-hp-small") + 8
    data = bytearray(bitstream.pack(make_header(version=5)))
    struct.pack_into("<II", data, body_start, 100000, 100000)
    with pytest.raises(CorruptBitstreamError, match="100000x100000"):
        bitstream.unpack(_resealed(data))
    data = bytearray(bitstream.pack(make_header()))
    sizes = bitstream.container.varint(512) + bitstream.container.varint(768)
    assert data[body_start : body_start + len(sizes)] == sizes
    data[body_start : body_start + len(sizes)] = bitstream.container.varint(100000) * 2
    struct.pack_into("<H", data, 6, struct.unpack_from("<H", data, 6)[0] + 2)
    with pytest.raises(CorruptBitstreamError, match="100000x100000"):
        bitstream.unpack(_resealed(data))


def _resealed(data: bytearray) -> bytes:
    """``data`` with its header CRC recomputed (a forged header that passes the checksum)."""
    head_end = 8 + struct.unpack_from("<H", data, 6)[0]
    struct.pack_into("<I", data, head_end, bitstream.container.crc32(bytes(data[:head_end])))
    return bytes(data)


def test_format_6_header_is_leaner_and_every_older_layout_still_packs_the_same():
    """Format 6: varint sizes and 7-byte chunk entries (one-byte tag, varint length, CRC32), the
    rest as before; a format 5 header still packs to its 12-byte entries and u32 sizes."""
    chunks = (
        Chunk("SEM ", b"s" * 300),
        Chunk("Z   ", b"z" * 200),
        Chunk("YB  ", b"b" * 5000),
        Chunk("YE  ", b"e" * 99),
    )
    lean, old = (bitstream.pack(make_header(chunks=chunks, version=v)) for v in (6, 5))
    assert len(old) - len(lean) == 4 + 3 * 5 + 6  # sizes 8 -> 4 bytes; entries 12 -> 7, 6 for a length < 128
    for data, version in ((lean, 6), (old, 5)):
        header = bitstream.unpack(data)
        assert header.version == version and header.chunks == chunks and bitstream.pack(header) == data
    with pytest.raises(ValueError, match="no chunk 'Y   '"):
        bitstream.pack(make_header(chunks=(Chunk("Y   ", b"x"),)))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, 2**32 - 1])
def test_varints_round_trip_minimal(value):
    encoded = bitstream.container.varint(value)
    assert bitstream.container.read_varint(encoded, 0) == (value, len(encoded))
    assert len(encoded) == max(1, -(-value.bit_length() // 7))


@pytest.mark.parametrize("bad", [b"\x80", b"\x80\x00", b"\xff\xff\xff\xff\x10", b"\x80\x80\x80\x80\x80\x01"])
def test_malformed_varints_are_refused(bad):
    with pytest.raises(struct.error):
        bitstream.container.read_varint(bad, 0)


def test_an_unknown_chunk_code_is_corrupt():
    data = bytearray(bitstream.pack(make_header(chunks=(Chunk("YB  ", b"abc"),))))
    code_at = 8 + 3 + len("vit-hp-small") + 8 + 2 + 2 + 4 + 1
    assert data[code_at] == bitstream.CHUNK_TAGS.index("YB  ") + 1
    data[code_at] = len(bitstream.CHUNK_TAGS) + 1
    with pytest.raises(CorruptBitstreamError, match="unknown chunk code"):
        bitstream.unpack(_resealed(data))


def test_missing_chunk_is_corrupt():
    header = bitstream.unpack(bitstream.pack(make_header(chunks=(Chunk("YB  ", b"abc"),))))
    with pytest.raises(CorruptBitstreamError, match="'Z'"):
        header.chunk("Z   ")


def test_prefix_up_to_a_chunk():
    import io

    header = make_header(chunks=(Chunk("Z   ", b"z" * 5), Chunk("YB  ", b"b" * 7), Chunk("YE  ", b"e" * 100)))
    data = bitstream.pack(header)
    prefix = bitstream.read_prefix(io.BytesIO(data), "YB  ")
    assert len(prefix) == len(data) - 100
    partial = bitstream.unpack(prefix, until="YB  ")
    assert [c.tag for c in partial.chunks] == ["Z   ", "YB  "]
    assert partial.header_bytes + partial.payload_bytes == len(prefix)
    with pytest.raises(TruncatedBitstreamError):
        bitstream.unpack(prefix)  # the whole file is needed without `until`
    with pytest.raises(TruncatedBitstreamError):
        bitstream.unpack(prefix[:-1], until="YB  ")
    with pytest.raises(CorruptBitstreamError, match="no 'MASK'"):
        bitstream.unpack(data, until="MASK")


def test_read_prefix_never_reads_past_a_lying_header():
    import io

    assert bitstream.read_prefix(io.BytesIO(b"garbage!" * 3), "YB  ") == b"garbage!"
    with pytest.raises(BitstreamError):
        bitstream.unpack(bitstream.read_prefix(io.BytesIO(b"SMCD\x01\x00\xff\xff" + b"\0" * 10), "YB  "), "YB  ")


def test_unknown_flags_are_refused():
    with pytest.raises(CorruptBitstreamError, match="flags"):
        bitstream.unpack(bitstream.pack(make_header(flags=1)))
