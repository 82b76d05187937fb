"""Release a trained checkpoint as a new, frozen model: ``python tools/ship_model.py vit-hp-192.r2``.

Copies ``checkpoints/<id>.safetensors`` (and heads distilled for it) into ``weights/`` under that id,
lists it as released in ``weights/registry.json`` with the qualities pointing at it, bumps the minor
version, adds a CHANGELOG.md entry and writes ``tests/conformance/<id>/``. Refuses an id that was
released before. ``--qualities 5-8``: the model serves only those (the high rungs of a ladder whose
low rungs stay with their model). Then: run the tests (``tests/test_conformance.py`` decodes every release's files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # release.py beside this script, outside the library
from release import ROOT, ship  # noqa: E402


def _quality_range(text: str) -> list[int]:
    """``5-8`` or ``5,6,7,8``."""
    try:
        if "-" in text:
            first, last = (int(v) for v in text.split("-"))
            return list(range(first, last + 1))
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give qualities as FIRST-LAST or a comma list") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint model id, e.g. vit-hp-192.r2")
    parser.add_argument("--from", dest="checkpoints", type=Path, default=ROOT / "checkpoints")
    parser.add_argument("--notes", default="", help="one line for the CHANGELOG (what it measures better)")
    parser.add_argument(
        "--drop-heads",
        action="store_true",
        help="release even if a token space the current model serves loses its head",
    )
    parser.add_argument(
        "--qualities",
        type=_quality_range,
        help="serve only these qualities of its table, e.g. 5-8 (the others keep their models)",
    )
    parser.add_argument("--default-quality", type=int, help="the encoder's default quality from now on")
    args = parser.parse_args()
    version = ship(
        args.checkpoints,
        args.model,
        args.notes,
        drop_heads=args.drop_heads,
        qualities=args.qualities,
        default_quality=args.default_quality,
    )
    print(f"released {args.model} in semcodec {version}")


if __name__ == "__main__":
    main()
