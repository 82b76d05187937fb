"""Conformance streams: golden files of each released model and what they must decode to.

A set lives in ``tests/conformance/<model-id>/``: the streams, ``manifest.json`` (per stream the
sha256 of its symbols, of the decoded pixels and of the decoded tokens) and ``reference.npz`` (the
decoded pixels, and the tokens in float16, for the bounded comparison). What is exact where
(README, "Determinism"):

* **symbols** (every integer the entropy coder saw): bit-exact on every machine and thread count,
  since the entropy-parameter path is integer arithmetic; a mismatch fails the decode's CRC anyway.
* **pixels** and **tokens** come out of float32 networks (``g_s``, the token head, a tower's tail):
  bit-exact for the same CPU kind, thread count and torch build (the manifest's hashes); elsewhere
  within :data:`PIXEL_BOUND` / :data:`TOKEN_RTOL` of the reference, the way JPEG's conformance
  tests bound a decoder's error instead of asking for identical samples.

Like JPEG's, the set is written once per model and never regenerated: a new model adds its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from semcodec.codec.api import Codec, Symbols

MANIFEST = "manifest.json"
REFERENCE = "reference.npz"
PIXEL_BOUND = 1
"""Largest per-sample difference from the reference pixels a conforming decoder may show."""
PIXEL_SHARE = 0.01
"""Largest share of samples that may differ from the reference at all."""
TOKEN_RTOL = 2e-3
"""Token tolerance: |t - ref| <= TOKEN_RTOL * (|ref| + max|ref|) (the reference is float16)."""


@dataclass
class DecodedOutputs:
    """What one stream decodes to, with the hashes a manifest records."""

    symbols: Symbols
    pixels: np.ndarray
    tokens: np.ndarray
    positions: np.ndarray | None
    token_space: str

    @property
    def hashes(self) -> dict[str, str]:
        return {
            "symbols_sha256": symbols_sha256(self.symbols),
            "pixels_sha256": array_sha256(self.pixels),
            "tokens_sha256": tokens_sha256(self.tokens, self.positions),
        }


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and little-endian bytes (a hash of what was decoded, not of a file format)."""
    array = np.ascontiguousarray(array)
    header = f"{array.dtype.newbyteorder('<').str}{array.shape}".encode()
    return hashlib.sha256(header + array.astype(array.dtype.newbyteorder("<")).tobytes()).hexdigest()


def symbols_sha256(symbols: Symbols) -> str:
    return array_sha256(np.concatenate([symbols.z.reshape(-1), symbols.y.reshape(-1)]).astype(np.int32))


def tokens_sha256(tokens: np.ndarray, positions: np.ndarray | None) -> str:
    digest = array_sha256(tokens.astype(np.float32))
    return digest if positions is None else hashlib.sha256((digest + array_sha256(positions)).encode()).hexdigest()


def decode_outputs(codec: Codec, data: bytes) -> DecodedOutputs:
    """Decode ``data`` to everything a conformance check compares: symbols, pixels and tokens (in
    the token space the file records), as ``semcodec decode`` and ``decode --target tokens`` do."""
    symbols = codec.decode_symbols(data).symbols
    pixels = codec.decode(data)
    out = codec.decode_tokens(data)
    positions = None if out.positions is None else out.positions.numpy().astype(np.int64)
    return DecodedOutputs(symbols, pixels, out.tokens.float().numpy(), positions, out.metadata["token_space"])


def decode_outputs_with_threads(codec: Codec, data: bytes, threads: int) -> DecodedOutputs:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return decode_outputs(codec, data)
    finally:
        torch.set_num_threads(previous)


def pixels_within_bounds(pixels: np.ndarray, reference: np.ndarray) -> str | None:
    """``None`` if ``pixels`` conform to ``reference``, else why not (one line)."""
    if pixels.shape != reference.shape:
        return f"pixels have shape {pixels.shape}, reference {reference.shape}"
    diff = np.abs(pixels.astype(np.int16) - reference.astype(np.int16))
    share = float(np.mean(diff > 0))
    if diff.max() > PIXEL_BOUND or share > PIXEL_SHARE:
        return f"pixels differ by up to {diff.max()} levels in {share:.2%} of samples"
    return None


def tokens_within_bounds(tokens: np.ndarray, reference: np.ndarray) -> str | None:
    """``None`` if ``tokens`` conform to the float16 ``reference``, else why not (one line)."""
    if tokens.shape != reference.shape:
        return f"tokens have shape {tokens.shape}, reference {reference.shape}"
    ref = reference.astype(np.float32)
    excess = np.abs(tokens - ref) - TOKEN_RTOL * (np.abs(ref) + np.abs(ref).max())
    if excess.max() > 0:
        return f"tokens differ from the reference by up to {np.abs(tokens - ref).max():.3g}"
    return None


def load_set(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A conformance set's manifest and reference arrays."""
    manifest = json.loads((folder / MANIFEST).read_text())
    with np.load(folder / REFERENCE) as arrays:
        return manifest, dict(arrays)
