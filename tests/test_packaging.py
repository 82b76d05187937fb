"""The short folder names import only under the ``semcodec`` namespace."""

from __future__ import annotations

import subprocess
import sys


def test_subpackages_live_under_semcodec():
    code = (
        "import sys, semcodec.models, semcodec.codec, semcodec.bitstream, semcodec.cli.main, semcodec.weights\n"
        "assert semcodec.models.__name__ == 'semcodec.models'\n"
        "assert not {'models', 'codec', 'bitstream', 'cli'} & set(sys.modules), sorted(sys.modules)\n"
        "assert semcodec.weights.load_registry().models\n"
    )
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, cwd="/")
    assert proc.returncode == 0, proc.stderr.decode()
