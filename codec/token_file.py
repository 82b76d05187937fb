"""Decoded tokens as a file: safetensors with their metadata, or ``.npy`` by extension."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

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
    return save(tensors, metadata=metadata)
