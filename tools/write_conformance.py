"""Write the conformance set of a released model: ``tests/conformance/<model-id>/``.

Run once, when a model ships (``tools/ship_model.py`` calls it); a set that exists is never
rewritten (this refuses), so the tests keep proving that files of every release decode unchanged.

Each stream is encoded by a real ``semcodec encode`` run (the CLI, in a subprocess), by default with
this checkout, or with ``--encoder-build DIR`` (a folder holding an earlier build's ``semcodec``
package, e.g. a ``git worktree`` of the commit that shipped the model): then the files are that
build's own output, and that build's decoder must produce exactly what this one does. Decoded here
with 2 and 1 threads; the manifest records what each output's hash is and whether it was the same
with both thread counts (README, "Determinism").

    python tools/write_conformance.py --model vit-hp-192 \\
        --encoder-build /tmp/old-build --written-by "semcodec 0.1.0 (commit 44b6c2d)"

A new format version adds its own streams to each earlier release's set (``--add-format-version``),
leaving the set's earlier streams as they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conformance_set.py beside this script, outside the library
from conformance_set import CONFORMANCE, KODAK, add_format_streams, write_set  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="released model id")
    parser.add_argument(
        "--encoder-build", type=Path, default=None, help="folder holding an earlier build's semcodec package"
    )
    parser.add_argument("--written-by", required=True, help="which semcodec release/commit writes the streams")
    parser.add_argument(
        "--include", type=Path, nargs="*", default=[], help="existing streams of this model to add as they are"
    )
    parser.add_argument("--semantic-layer", default=None, help="write this released semantic layer's set instead")
    parser.add_argument("--kodak", type=Path, default=KODAK)
    parser.add_argument("--out", type=Path, default=CONFORMANCE)
    parser.add_argument(
        "--add-format-version",
        action="store_true",
        help="add streams in this build's format version to the model's existing set",
    )
    args = parser.parse_args()
    if args.add_format_version:
        add_format_streams(args.model, args.out, args.kodak, args.written_by)
        return
    write_set(
        args.model, args.out, args.kodak, args.written_by, args.encoder_build, args.include,
        semantic_layer=args.semantic_layer,
    )  # fmt: skip


if __name__ == "__main__":
    main()
