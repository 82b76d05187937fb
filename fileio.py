"""Every file the project writes goes through :func:`write_atomic`; every file it hashes, :func:`sha256_file`.

Atomic output: a reader never sees a half-written file, a crash leaves none behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from semcodec.errors import SemcodecError


class OutputExistsError(SemcodecError):
    """The output path exists and overwriting was not asked for."""


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path | str, text: str) -> None:
    """:func:`write_atomic` of UTF-8 text, overwriting."""
    write_atomic(path, text.encode("utf-8"), force=True)


PART_SUFFIX = ".part"
"""The ending of :func:`write_atomic`'s temporary files (``.<name>.<random><suffix>`` beside the target)."""


def clear_stale_parts(path: Path | str) -> None:
    """Remove the temporary files an earlier :func:`write_atomic` of ``path`` left when its process was
    killed outright (SIGKILL runs no cleanup): for a job that is redoing that output."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*{PART_SUFFIX}"):
        stale.unlink(missing_ok=True)


def write_atomic(path: Path | str, data: bytes, force: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    The rename is atomic on POSIX, so ``path`` holds either its old content or all of ``data``.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists (use --force to overwrite)")
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
