"""semcodec: a learned semantic image codec.

The repository root is the ``semcodec`` package. Heavy modules (torch) are imported lazily so that
``semcodec.bitstream`` and ``semcodec --version`` stay cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "4.0.0"
"""Semantic versioning: a release that ships a model bumps the minor version (CHANGELOG.md)."""

_LAZY = {
    "encode": "semcodec.codec.api",
    "decode": "semcodec.codec.api",
    "decode_tokens": "semcodec.codec.api",
    "Codec": "semcodec.codec.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'semcodec' has no attribute {name!r}")
