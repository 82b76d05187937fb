"""Thin adapter to constriction's range coder: integer symbols + model parameters in, bytes out.

The entropy *models* live in the network (``EntropyBottleneck`` CDFs, ``GaussianConditional``
scales); this module only codes. Every parameter passed to constriction is either a frozen integer
CDF or a std computed by exact fixed-point arithmetic, never a raw network float, so encoder and
decoder hand constriction bit-identical models (constriction's own requirement).
"""

from __future__ import annotations

import constriction
import numpy as np

from semcodec import bitstream
from semcodec.errors import CorruptBitstreamError

SYMBOL_BOUND = 255
"""Latent symbols are clamped to [-SYMBOL_BOUND, SYMBOL_BOUND] at the encoder (no escape code)."""
CDF_PRECISION = 16


def symbols_crc32(*symbols: np.ndarray) -> int:
    """The CRC a file records for its symbols: :func:`~semcodec.bitstream.symbols_crc` of each array
    as little-endian int32 (C order), one after another (z then y for a layer's whole set). Computed
    a million symbols at a time, so a 100 MP photo's symbols are never copied whole."""
    crc = 0
    for array in symbols:
        flat = np.asarray(array).reshape(-1)
        for start in range(0, flat.size, CRC_CHUNK):
            crc = bitstream.symbols_crc(flat[start : start + CRC_CHUNK].astype("<i4").tobytes(), crc)
    return crc


CRC_CHUNK = 1 << 20


def _words(data: bytes) -> np.ndarray:
    if len(data) % 4:
        raise CorruptBitstreamError("corrupt bitstream: entropy-coded chunk is not a whole number of words")
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)


class GaussianEncoder:
    """Zero-mean quantized-Gaussian symbols into one range-coded stream, in several calls (slices);
    factorized symbols may open the same stream (:meth:`encode_factorized`: a semantic layer's z)."""

    def __init__(self) -> None:
        self._model = constriction.stream.model.QuantizedGaussian(-SYMBOL_BOUND, SYMBOL_BOUND)
        self._encoder = constriction.stream.queue.RangeEncoder()

    def encode_factorized(self, symbols: np.ndarray, pmfs: list[np.ndarray]) -> None:
        """Symbols against frozen per-channel tables, as :func:`encode_factorized` codes them."""
        _encode_categorical(self._encoder, symbols, pmfs)

    def encode(self, symbols: np.ndarray, stds: np.ndarray) -> None:
        """One std (bit-identical at the decoder) per symbol."""
        stds = np.ascontiguousarray(stds, dtype=np.float64).reshape(-1)
        symbols = np.ascontiguousarray(symbols, dtype=np.int32).reshape(-1)
        if symbols.size:
            self._encoder.encode(symbols, self._model, np.zeros_like(stds), stds)

    def data(self) -> bytes:
        return self._encoder.get_compressed().astype("<u4").tobytes()


class GaussianDecoder:
    """Reads a :class:`GaussianEncoder` stream back, call for call, with the same stds."""

    def __init__(self, data: bytes):
        self._model = constriction.stream.model.QuantizedGaussian(-SYMBOL_BOUND, SYMBOL_BOUND)
        try:
            self._decoder = constriction.stream.queue.RangeDecoder(_words(data))
        except (AssertionError, ValueError, RuntimeError) as exc:
            raise CorruptBitstreamError(f"corrupt bitstream: latent stream does not decode ({exc})") from None

    def decode_factorized(self, pmfs: list[np.ndarray], positions: int) -> np.ndarray:
        """What :meth:`GaussianEncoder.encode_factorized` coded: (channels, positions)."""
        return _decode_categorical(self._decoder, pmfs, positions)

    def decode(self, stds: np.ndarray) -> np.ndarray:
        stds = np.ascontiguousarray(stds, dtype=np.float64).reshape(-1)
        if not stds.size:
            return np.zeros(0, dtype=np.int32)
        try:
            return np.asarray(self._decoder.decode(self._model, np.zeros_like(stds), stds), dtype=np.int32)
        except (AssertionError, ValueError, RuntimeError) as exc:
            raise CorruptBitstreamError(f"corrupt bitstream: latent stream does not decode ({exc})") from None


def encode_gaussian(symbols: np.ndarray, stds: np.ndarray) -> bytes:
    """Code zero-mean quantized-Gaussian symbols, one std (bit-identical at the decoder) per symbol."""
    encoder = GaussianEncoder()
    encoder.encode(symbols, stds)
    return encoder.data()


def decode_gaussian(data: bytes, stds: np.ndarray) -> np.ndarray:
    return GaussianDecoder(data).decode(stds)


def pmfs_from_cdfs(quantized_cdf: np.ndarray, cdf_length: np.ndarray) -> list[np.ndarray]:
    """Per-channel probabilities (float64, exact) from CompressAI's frozen integer CDF tables.

    Each row holds ``cdf_length`` entries: 0, the CDF over ``cdf_length - 2`` symbols, then the tail
    bin. The tail bin is kept as a (never used) symbol so the probabilities are the table's own.
    """
    scale = float(1 << CDF_PRECISION)
    rows = zip(quantized_cdf, cdf_length, strict=True)
    return [np.diff(row[:length]).astype(np.float64) / scale for row, length in rows]


def encode_factorized(symbols: np.ndarray, pmfs: list[np.ndarray]) -> bytes:
    """Code ``symbols`` (channels x positions, already offset to start at 0), channel by channel."""
    encoder = constriction.stream.queue.RangeEncoder()
    _encode_categorical(encoder, symbols, pmfs)
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_factorized(data: bytes, pmfs: list[np.ndarray], positions: int) -> np.ndarray:
    try:
        decoder = constriction.stream.queue.RangeDecoder(_words(data))
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise CorruptBitstreamError(f"corrupt bitstream: side-information stream does not decode ({exc})") from None
    return _decode_categorical(decoder, pmfs, positions)


def _encode_categorical(
    encoder: constriction.stream.queue.RangeEncoder, symbols: np.ndarray, pmfs: list[np.ndarray]
) -> None:
    for channel, pmf in zip(symbols, pmfs, strict=True):
        model = constriction.stream.model.Categorical(pmf, perfect=False)
        encoder.encode(np.ascontiguousarray(channel, dtype=np.int32), model)


def _decode_categorical(
    decoder: constriction.stream.queue.RangeDecoder, pmfs: list[np.ndarray], positions: int
) -> np.ndarray:
    try:
        rows = [decoder.decode(constriction.stream.model.Categorical(pmf, perfect=False), positions) for pmf in pmfs]
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise CorruptBitstreamError(f"corrupt bitstream: side-information stream does not decode ({exc})") from None
    return np.stack(rows).astype(np.int32)


def encode_mask(mask: np.ndarray) -> bytes:
    """Code a boolean mask with an i.i.d. model whose rate is derived from its count (stored first)."""
    kept, total = int(mask.sum()), int(mask.size)
    head = np.array([kept], dtype="<u4").tobytes()
    if kept in (0, total):
        return head  # nothing to code: all or none
    model = constriction.stream.model.Categorical(np.array([total - kept, kept], np.float64) / total, perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(mask.astype(np.int32).reshape(-1), model)
    return head + encoder.get_compressed().astype("<u4").tobytes()


def decode_mask(data: bytes, total: int) -> np.ndarray:
    if len(data) < 4:
        raise CorruptBitstreamError("corrupt bitstream: token mask chunk is too short")
    kept = int(np.frombuffer(data[:4], dtype="<u4")[0])
    if kept > total:
        raise CorruptBitstreamError(f"corrupt bitstream: token mask keeps {kept} of {total} tokens")
    if kept in (0, total):
        return np.full(total, kept == total)
    model = constriction.stream.model.Categorical(np.array([total - kept, kept], np.float64) / total, perfect=False)
    try:
        mask = constriction.stream.queue.RangeDecoder(_words(data[4:])).decode(model, total).astype(bool)
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise CorruptBitstreamError(f"corrupt bitstream: token mask does not decode ({exc})") from None
    if int(mask.sum()) != kept:
        raise CorruptBitstreamError("corrupt bitstream: token mask count mismatch")
    return mask
