"""Tensors to symbols and back: padding, quantization, exact entropy parameters, constriction coding.

The API is imported lazily, so torch-free modules here (:mod:`semcodec.codec.defaults`) stay cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Codec", "EncodeResult", "decode", "decode_tokens", "encode"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from semcodec.codec import api

        return getattr(api, name)
    raise AttributeError(f"module 'semcodec.codec' has no attribute {name!r}")
