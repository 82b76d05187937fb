"""Fuzzing the container and the decoder: every malformed input ends in a typed error, quickly.

Two layers: (1) a saved corpus of hand-made bad files in tests/corpus, each with the error class it
must raise (a missing or stale index fails the tests; ``python -m tests.test_fuzz`` rewrites the
corpus); (2) hypothesis-driven mutations of a real bitstream: truncations, bit flips,
inserted/deleted bytes, tampered length and size fields, and payload garbage with every CRC
recomputed so the entropy decoder itself is exercised.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semcodec import bitstream
from semcodec.bench.reliability import reseal
from semcodec.errors import BitstreamError, SemcodecError
from tests.conftest import synthetic_image

CORPUS = Path(__file__).parent / "corpus"
INDEX = CORPUS / "index.json"
REGENERATE = "regenerate the corpus from the repository root with `python -m tests.test_fuzz` and review the diff"
SECONDS_PER_CASE = 5.0


def corpus_cases(valid: bytes) -> dict[str, tuple[bytes, str]]:
    """Hand-made bad files (name -> (bytes, expected error class name))."""
    header = bitstream.unpack(valid)
    zero_chunk = bitstream.pack(
        bitstream.Header(
            **{
                **header.__dict__,
                "chunks": tuple(bitstream.Chunk(c.tag, b"" if c.tag == "YB  " else c.payload) for c in header.chunks),
            }
        )
    )
    version = bytearray(valid)
    struct.pack_into("<H", version, 4, 99)
    magic = bytearray(valid)
    magic[:4] = b"SMCX"
    return {
        "empty": (b"", "TruncatedBitstreamError"),
        "magic-only": (b"SMCD", "TruncatedBitstreamError"),
        "truncated-header": (valid[:20], "TruncatedBitstreamError"),
        "truncated-payload": (valid[: len(valid) - 9], "TruncatedBitstreamError"),
        "flipped-header-bit": (valid[:12] + bytes([valid[12] ^ 4]) + valid[13:], "CorruptBitstreamError"),
        "flipped-payload-bit": (valid[:-6] + bytes([valid[-6] ^ 1]) + valid[-5:], "CorruptBitstreamError"),
        "huge-size-resealed": (forged(header, size=(100000, 100000)), "CorruptBitstreamError"),
        "big-size-resealed": (forged(header, size=(60000, 60000)), "BitstreamError"),
        "zero-length-base-chunk": (zero_chunk, "BitstreamError"),
        "huge-chunk-length-resealed": (forged(header, first_length=2**31), "TruncatedBitstreamError"),
        "future-version": (bytes(version), "UnsupportedVersionError"),
        "wrong-magic": (bytes(magic), "BitstreamError"),
        "png-file": (b"\x89PNG\r\n\x1a\n" + bytes(64), "BitstreamError"),
        "trailing-garbage": (valid + b"\0\1\2", "CorruptBitstreamError"),
    }


def forged(header: bitstream.Header, size: tuple[int, int] | None = None, first_length: int | None = None) -> bytes:
    """A format 6 file of ``header``'s chunks whose header declares ``size`` (height, width) or
    ``first_length`` for its first chunk, with valid checksums: written here from the spec
    (docs/format.md), since ``bitstream.pack`` refuses such values."""
    varint, crc32 = bitstream.container.varint, bitstream.container.crc32
    assert header.version == 6
    height, width = size or (header.height, header.width)
    name = header.model_id.encode()
    body = bytes([header.quality, header.flags, len(name)]) + name + header.weights_hash
    body += varint(height) + varint(width) + struct.pack("<I", header.symbols_crc) + bytes([len(header.chunks)])
    for i, chunk in enumerate(header.chunks):
        length = first_length if i == 0 and first_length is not None else len(chunk.payload)
        body += (
            bytes([bitstream.CHUNK_TAGS.index(chunk.tag) + 1])
            + varint(length)
            + struct.pack("<I", crc32(chunk.payload))
        )
    head = b"SMCD" + struct.pack("<HH", header.version, len(body)) + body
    return head + struct.pack("<I", crc32(head)) + b"".join(chunk.payload for chunk in header.chunks)


def valid_bitstream(codec) -> bytes:
    """The real file every corpus case and mutation starts from."""
    return codec.encode(synthetic_image(48, 80, seed=3), 1).data


def write_corpus(valid: bytes) -> None:
    """Rewrite tests/corpus: one NAME.smc per case of :func:`corpus_cases`, and the index of their errors."""
    cases = corpus_cases(valid)
    for old in CORPUS.glob("*.smc"):
        if old.stem not in cases:
            old.unlink()
    for name, (data, _) in cases.items():
        (CORPUS / f"{name}.smc").write_bytes(data)
    INDEX.write_text(json.dumps({n: e for n, (_, e) in cases.items()}, indent=1) + "\n")


def saved_index() -> dict[str, str]:
    assert INDEX.is_file(), f"{INDEX} is missing: {REGENERATE}"
    return json.loads(INDEX.read_text())


@pytest.fixture(scope="module")
def valid(codec) -> bytes:
    return valid_bitstream(codec)


def test_saved_corpus_is_complete_and_current(valid):
    """The index lists every case of corpus_cases() with its error, and a file for each, nothing else.

    The files are kept, not compared with today's encoder output: they are the fixed inputs.
    """
    index = saved_index()
    expected = {name: error for name, (_, error) in corpus_cases(valid).items()}
    assert index == expected, f"{INDEX} is out of date with corpus_cases(): {REGENERATE}"
    files = {path.stem for path in CORPUS.glob("*.smc")}
    stray = sorted(files ^ set(index))
    assert not stray, f"corpus files {stray} are missing or not in {INDEX.name}: {REGENERATE}"


def test_saved_corpus(codec):
    index = saved_index()
    assert len(index) >= 12
    for name, expected in index.items():
        data = (CORPUS / f"{name}.smc").read_bytes()
        start = time.perf_counter()
        with pytest.raises(BitstreamError) as info:
            codec.decode(data)
        assert expected in {cls.__name__ for cls in type(info.value).__mro__}, (name, info.value)
        assert time.perf_counter() - start < SECONDS_PER_CASE, name


def _decode_or_typed_error(codec, data: bytes) -> None:
    start = time.perf_counter()
    try:
        pixels = codec.decode(data)
    except SemcodecError:
        pass
    else:  # a mutation that kept the file valid must still decode to the declared size
        header = bitstream.unpack(data)
        assert pixels.shape == (header.height, header.width, 3)
    assert time.perf_counter() - start < SECONDS_PER_CASE


FUZZ = settings(
    max_examples=int(os.environ.get("SEMCODEC_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@FUZZ
@given(data=st.data())
def test_fuzz_mutations(codec, valid, data):
    blob = bytearray(valid)
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete", "overwrite", "random"]))
    if kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) * 8 - 1))
            blob[i // 8] ^= 1 << (i % 8)
    elif kind == "insert":
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    elif kind == "delete":
        i = data.draw(st.integers(0, len(blob) - 1))
        del blob[i : i + data.draw(st.integers(1, 16))]
    elif kind == "overwrite":
        i = data.draw(st.integers(0, len(blob) - 4))
        blob[i : i + 4] = data.draw(st.binary(min_size=4, max_size=4))
    else:
        blob = bytearray(data.draw(st.binary(max_size=512)))
    _decode_or_typed_error(codec, bytes(blob))


@FUZZ
@given(data=st.data())
def test_fuzz_payloads_past_the_checksums(codec, valid, data):
    """Garbage payloads with recomputed CRCs reach the entropy decoder; the symbol CRC stops them."""
    blob = bytearray(valid)
    header_end = len(valid) - bitstream.unpack(valid).payload_bytes
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(header_end, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    resealed = reseal(blob)
    try:
        pixels = codec.decode(resealed)
    except SemcodecError:
        return
    # bits the range decoder never reads (the tail of its last word) may change harmlessly;
    # anything else must have been caught: never a different image
    assert np.array_equal(pixels, codec.decode(valid))


def test_decoder_never_allocates_a_declared_huge_image(codec, valid):
    """A resealed header declaring 60000 x 60000 is refused before any tensor is made."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = corpus_cases(valid)["big-size-resealed"][0]
    with pytest.raises(BitstreamError, match="pixel limit"):
        codec.decode(data)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


if __name__ == "__main__":  # python -m tests.test_fuzz, from the repository root
    from semcodec.codec import Codec

    write_corpus(valid_bitstream(Codec()))
    print(f"wrote {len(saved_index())} cases and {INDEX}")
