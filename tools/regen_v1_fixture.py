"""Rewrite ``tests/data/format-v1-q2.smc`` for the weights in ``weights/``.

The fixture pins that format version 1 files (stds rounded up to the scale table) still decode. Its
header carries the weights hash, so shipping new weights means writing it again, the way the
version 1 writer did: the same encoder with table-rounded stds, the version field set to 1.
Run after new weights land: ``python tools/regen_v1_fixture.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "format-v1-q2.smc"


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import synthetic_image  # the image the test's docstring names

    import semcodec.codec.api as api
    from semcodec.bitstream import pack, unpack

    codec = api.Codec()
    table_rounded = functools.partial(api._walk_slices, scale_table=True)
    with mock.patch.object(api, "_walk_slices", table_rounded):
        written = codec.encode(synthetic_image(64, 96, seed=11), 2).data
    data = pack(dataclasses.replace(unpack(written), version=1))
    assert codec.decode(data).shape == (64, 96, 3)
    FIXTURE.write_bytes(data)
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
