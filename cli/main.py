"""``semcodec`` command line: encode, decode, info, batch, train, distill.

Every failure a user can cause (missing file, not an image, bad bitstream, existing output) ends as
one line on stderr and exit status 1; outputs are written atomically, so none is left half-written.
This module assembles the group (:mod:`~semcodec.cli.app`) and its commands.
"""

from __future__ import annotations

from semcodec.cli import batch, coding, semantic_training, training  # noqa: F401 (each registers its commands on the group)
from semcodec.cli.app import main, run

__all__ = ["main", "run"]
