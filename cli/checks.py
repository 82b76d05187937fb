"""Everything a command can refuse without a model, checked before torch loads (well under a second).

Each check raises :class:`SemcodecError` with the one line the user sees.
"""

from __future__ import annotations

from pathlib import Path

from semcodec.bitstream import Header
from semcodec.codec.image_io import latent_token_count
from semcodec.errors import SemcodecError
from semcodec.weights import Registry

PIXEL_SUFFIXES = (".png",)
TOKEN_SUFFIXES = (".safetensors", ".npy")


def check_input_file(path: str) -> None:
    """``path`` names a readable file ('-' is stdin)."""
    if path == "-":
        return
    p = Path(path)
    if not p.exists():
        raise SemcodecError(f"no such file: {path}")
    if p.is_dir():
        raise SemcodecError(f"{path} is a directory")
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise SemcodecError(f"cannot read {path}: {exc.strerror or exc}") from None


def check_output(path: str, force: bool, suffixes: tuple[str, ...] | None = None, what: str = "") -> None:
    """``path`` may be written: not there (or ``force``), its folder exists, its extension fits ``suffixes``."""
    if path == "-":
        return
    p = Path(path)
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise SemcodecError(f"{path}: {what} output must end in {' or '.join(suffixes)} (got {p.suffix or 'none'!r})")
    if p.is_dir():
        raise SemcodecError(f"{path} is a directory")
    if p.exists() and not force:
        raise SemcodecError(f"{path} exists (use --force to overwrite)")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise SemcodecError(f"output folder {folder} does not exist")


def check_encode_settings(registry: Registry, quality: int | None, token_space: str | None) -> None:
    """The quality is served and the token space is one the quality's model has."""
    level = registry.quality(registry.default_quality if quality is None else quality)
    registry.check_encode_space(level.model, registry.requested_space(token_space))


def check_decodable(registry: Registry, header: Header, token_space: str | None = None) -> None:
    """The file's model is installed with the weights that wrote it (and has ``token_space``)."""
    registry.decoding_model(header.model_id, header.weights_hash).check_token_space(token_space)


def check_token_count(path: str, keep_tokens: int | None) -> None:
    """``--tokens N`` is at most the image's latent tokens (read from its header, not decoded)."""
    if keep_tokens is None or path == "-":
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        return  # not an image: the reader says so in its own words
    total = latent_token_count(height, width)
    if keep_tokens > total:
        raise SemcodecError(f"--tokens {keep_tokens}: {path} ({width}x{height}) has only {total} latent tokens")
