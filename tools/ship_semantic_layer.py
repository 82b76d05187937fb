"""Release a trained semantic layer: ``python tools/ship_semantic_layer.py FOLDER SOURCE_ID LAYER_ID``.

Copies layer SOURCE_ID of the training folder FOLDER (``semcodec train-semantic-layer --out FOLDER
--layer-id SOURCE_ID``) into ``weights/`` as
``<LAYER_ID>.safetensors``, lists it as released and as the layer the encoder writes for its tower,
bumps the minor version, adds a CHANGELOG line and writes ``tests/conformance/<LAYER_ID>/``. Refuses
an id that was released before. Then: run the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # release.py beside this script, outside the library
from release import ship_semantic_layer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the training folder (train-semantic-layer --out)")
    parser.add_argument("source_id", help="the layer's id there (train-semantic-layer --layer-id)")
    parser.add_argument("layer_id", help="a new id, e.g. sl-lite0-b7")
    parser.add_argument("--notes", default="", help="one line for the CHANGELOG")
    parser.add_argument(
        "--encoder-gains",
        default=None,
        help="gains the encoder tries, fewest bytes first, e.g. 0,1,2,3: the first that keeps the tower's answer",
    )
    args = parser.parse_args()
    gains = tuple(int(g) for g in args.encoder_gains.split(",")) if args.encoder_gains else None
    version = ship_semantic_layer(args.checkpoint, args.source_id, args.layer_id, args.notes, encoder_gains=gains)
    print(f"released semantic layer {args.layer_id} in semcodec {version}")


if __name__ == "__main__":
    main()
