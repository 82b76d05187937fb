"""Where the benchmarks' images come from: a folder, or a ``.txt`` list of images in the shared data."""

from __future__ import annotations

from pathlib import Path

from semcodec.errors import InputError
from semcodec.shared_data import DATA_ROOT
from semcodec.training.data import list_images

SETS = Path(__file__).resolve().parent / "sets"
"""Named evaluation sets kept as lists (``structured.txt``: issue 43's structured photos)."""


def image_paths(dataset: Path, root: Path = DATA_ROOT) -> list[Path]:
    """The images of ``dataset``: every image under a folder, or the lines of a ``.txt`` list
    (paths relative to ``root``; ``#`` starts a comment), in a fixed order."""
    if dataset.is_dir():
        return list_images(dataset)
    if dataset.suffix != ".txt":
        raise InputError(f"{dataset}: a benchmark dataset is a folder or a .txt list of images")
    lines = (line.split("#", 1)[0].strip() for line in dataset.read_text().splitlines())
    paths = [root / line for line in lines if line]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{dataset}: {len(missing)} listed images are missing, e.g. {missing[0]}")
    return paths
