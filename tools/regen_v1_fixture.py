"""Rewrite ``tests/data/format-v1-q2.smc`` for the weights in ``weights/``.

The fixture pins that format version 1 files (stds rounded up to the scale table) still decode. Its
header carries the weights hash, so shipping new weights means writing it again, the way the
version 1 writer did: the same encoder with table-rounded stds, the version field set to 1.
Run after new weights land: ``python tools/regen_v1_fixture.py``.
"""

from __future__ import annotations

import functools
import struct
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "format-v1-q2.smc"


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import synthetic_image  # the image the test's docstring names

    import semcodec.codec.api as api
    from semcodec.bench.reliability import reseal
    from semcodec.bitstream import unpack

    codec = api.Codec()
    table_rounded = functools.partial(api._walk_slices, scale_table=True)
    with mock.patch.object(api, "_walk_slices", table_rounded):
        data = bytearray(codec.encode(synthetic_image(64, 96, seed=11), 2).data)
    struct.pack_into("<H", data, 4, 1)  # the u16 version field after the magic
    data = reseal(bytes(data))
    assert unpack(data).version == 1 and codec.decode(data).shape == (64, 96, 3)
    FIXTURE.write_bytes(data)
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
