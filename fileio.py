"""Atomic file output: a reader never sees a half-written file, a crash leaves none behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from semcodec.errors import SemcodecError


class OutputExistsError(SemcodecError):
    """The output path exists and overwriting was not asked for."""


def write_atomic(path: Path | str, data: bytes, force: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    The rename is atomic on POSIX, so ``path`` holds either its old content or all of ``data``.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists (use --force to overwrite)")
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
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
