"""Where the workplace's read-only data lives: the one place that spells it (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT = Path(os.environ.get("SEMCODEC_DATA") or Path(__file__).resolve().parent.parent / "shared" / "data")
"""``../shared/data`` beside the repository, or ``$SEMCODEC_DATA``: training photos, Kodak, the
ImageNet sample; used by training, benchmarks, releases and tests, never downloaded."""
