"""Typed errors: the CLI prints any of these as one line on stderr and exits 1.

Pure Python (no torch) so that :mod:`semcodec.bitstream` can raise them.
"""

from __future__ import annotations


class SemcodecError(Exception):
    """Base of every error semcodec reports to a user (never a traceback)."""


class BitstreamError(SemcodecError):
    """The file is not a valid semcodec bitstream (foreign, truncated, corrupt, future version)."""


class TruncatedBitstreamError(BitstreamError):
    """The file ends before the lengths in its header say it should."""


class CorruptBitstreamError(BitstreamError):
    """A checksum or a field value is wrong."""


class UnsupportedVersionError(BitstreamError):
    """The file was written by a newer (or unknown) format version."""


class InputError(SemcodecError, ValueError):
    """An argument or input the codec cannot take: a ValueError to API callers, one line in the CLI."""


class ImageError(InputError):
    """The input cannot be read as an image, or is too large to code."""


class ConversionWarning(UserWarning):
    """The input was converted to 8-bit RGB (greyscale, transparency, 16-bit, frames): ``semcodec.encode``
    warns with it; ``Codec.encode`` returns the same lines in ``EncodeResult.warnings``."""


class WeightsError(SemcodecError):
    """Model weights are missing, unknown, or fail their sha256 check."""
