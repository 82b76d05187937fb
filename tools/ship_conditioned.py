"""Release a pixel model that reads the semantic layer: ``python tools/ship_conditioned.py FOLDER MODEL_ID``.

Copies model MODEL_ID of the training folder FOLDER (``semcodec train-semantic-condition --out
FOLDER --model-name MODEL_ID``: its refiner; the rest is its released base model) into ``weights/``,
lists it as released and as the encoder's model in place of its base for files that carry the
semantic layer it reads, bumps the minor version, adds a CHANGELOG line and writes
``tests/conformance/<MODEL_ID>/``. Refuses an id that was released before. Then: run the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # release.py beside this script, outside the library
from release import ship_conditioned  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the training folder (train-semantic-condition --out)")
    parser.add_argument("model_id", help="the model's id there (train-semantic-condition --model-name)")
    parser.add_argument("--notes", default="", help="one line for the CHANGELOG")
    args = parser.parse_args()
    version = ship_conditioned(args.checkpoint, args.model_id, args.notes)
    print(f"released {args.model_id} in semcodec {version}")


if __name__ == "__main__":
    main()
