"""The constriction adapter: exact symbols back, and golden compressed words on this format.

If a constriction upgrade changed these words, files written before it would stop decoding; the
golden values make that visible. Regenerate only deliberately (and bump the format version).
"""

from __future__ import annotations

import numpy as np
import pytest

from semcodec.codec import entropy
from semcodec.errors import CorruptBitstreamError

STDS = np.array([0.11, 0.5, 1.0, 3.0, 10.0, 40.0] * 5)
SYMBOLS = np.array(
    [255, -255, 0, -3, -5, -40, 0, 1, 0, -2, 5, 14, 0, 0, 0, 2, -13, -18, 0, -1, -2, -1, -13, 11, 0, 0, -3, -2, 0, 5],
    dtype=np.int32,
)
GOLDEN_GAUSSIAN = [4294967039, 4278213955, 3110784159, 3375992742, 197873705]
CDFS = np.array([[0, 1, 3, 8, 60008, 65008, 65535, 65536], [0, 100, 30000, 65000, 65536, 0, 0, 0]])
CDF_LENGTHS = np.array([8, 5])
Z_SYMBOLS = np.array([[3, 3, 2, 4, 0, 5], [1, 2, 1, 1, 0, 1]], dtype=np.int32)
GOLDEN_FACTORIZED = [1421965, 801259622]


def test_gaussian_golden_words_and_round_trip():
    data = entropy.encode_gaussian(SYMBOLS, STDS)
    assert np.frombuffer(data, "<u4").tolist() == GOLDEN_GAUSSIAN
    np.testing.assert_array_equal(entropy.decode_gaussian(data, STDS), SYMBOLS)


def test_factorized_golden_words_and_round_trip():
    pmfs = entropy.pmfs_from_cdfs(CDFS, CDF_LENGTHS)
    assert [len(p) for p in pmfs] == [7, 4]
    data = entropy.encode_factorized(Z_SYMBOLS, pmfs)
    assert np.frombuffer(data, "<u4").tolist() == GOLDEN_FACTORIZED
    np.testing.assert_array_equal(entropy.decode_factorized(data, pmfs, 6), Z_SYMBOLS)


def test_random_round_trip_large():
    rng = np.random.default_rng(0)
    stds = np.exp(rng.uniform(np.log(0.11), np.log(256), 50_000))
    symbols = np.clip(np.round(rng.normal(0, stds)), -entropy.SYMBOL_BOUND, entropy.SYMBOL_BOUND).astype(np.int32)
    np.testing.assert_array_equal(entropy.decode_gaussian(entropy.encode_gaussian(symbols, stds), stds), symbols)


def test_ragged_payload_is_corrupt():
    with pytest.raises(CorruptBitstreamError):
        entropy.decode_gaussian(b"\x01\x02\x03", STDS)
