"""Decoded tokens as a file: safetensors with their metadata, or ``.npy`` by extension."""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

import numpy as np
import torch

from semcodec import bitstream
from semcodec.codec.defaults import DEFAULT_TOKEN_DTYPE


@dataclass
class TokenOutput:
    tokens: torch.Tensor  # (N, D)
    metadata: dict[str, str]
    positions: torch.Tensor | None = None  # (N,) row-major grid index of each token, when pruned


def token_file_bytes(result: TokenOutput, output_path: str, dtype: str = DEFAULT_TOKEN_DTYPE) -> bytes:
    """Tokens as a file: ``.npy`` by extension, otherwise safetensors with the metadata (and the
    grid positions when the encoder pruned tokens)."""
    from safetensors.torch import save

    tokens = result.tokens.to(torch.float16 if dtype == "fp16" else torch.float32)
    if output_path.endswith(".npy"):
        buffer = io.BytesIO()
        np.save(buffer, tokens.numpy())
        return buffer.getvalue()
    metadata = {**result.metadata, "dtype": dtype, "layout": "tokens[N, D], row-major over the grid"}
    tensors = {"tokens": tokens}
    if result.positions is not None:
        tensors["positions"] = result.positions.to(torch.int64)
    return canonical_safetensors(save(tensors, metadata=metadata))


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` with its JSON header's keys sorted: safetensors writes its metadata map in an order
    that changes from process to process, so the same tokens made files of different bytes. The
    header stays padded to 8 bytes with spaces, as the format asks; the tensor bytes are untouched."""
    (length,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


def token_metadata(
    header: bitstream.Header,
    tokens: torch.Tensor,
    space: str,
    source: dict[str, str],
    grid: tuple[int, int],
    bytes_read: int,
    layers_read: str,
    extra: dict[str, str],
    kept: int | None,
) -> dict[str, str]:
    """A tokens decode's metadata (what the token file records), the same keys whichever layer served."""
    metadata = {
        "token_space": space,
        **source,
        "grid": f"{grid[0]}x{grid[1]}",
        "token_count": str(tokens.shape[0]),
        "token_dim": str(tokens.shape[1]),
        "source_size": f"{header.width}x{header.height}",
        "bitstream_bytes_read": str(bytes_read),
        "layers_read": layers_read,
        **extra,
        "model": header.model_id,
        "quality": str(header.quality),
    }
    if kept is not None:
        metadata["kept_tokens"] = str(kept)
    return metadata
