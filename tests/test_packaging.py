"""The short folder names import only under the ``semcodec`` namespace."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_subpackages_live_under_semcodec():
    code = (
        "import sys, semcodec.models, semcodec.codec, semcodec.bitstream, semcodec.cli.main, semcodec.weights\n"
        "assert semcodec.models.__name__ == 'semcodec.models'\n"
        "assert not {'models', 'codec', 'bitstream', 'cli'} & set(sys.modules), sorted(sys.modules)\n"
        "assert semcodec.weights.load_registry().models\n"
    )
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, cwd="/")
    assert proc.returncode == 0, proc.stderr.decode()


ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("bitstream", "models", "weights", "codec", "training", "batch")


def test_modules_stay_small_and_the_library_never_imports_its_front_ends():
    """A newcomer's guard rails (contributing.md): no module over 500 lines; the library layers never
    import the command line, the benchmarks or the maintainers' tools."""
    library = {p: p.read_text() for f in LIBRARY for p in (ROOT / f).rglob("*.py")}
    library.update({p: p.read_text() for p in ROOT.glob("*.py")})
    front_ends = {p: p.read_text() for f in ("cli", "bench", "tools") for p in (ROOT / f).rglob("*.py")}
    files = {**library, **front_ends}
    assert len(files) > 50
    long = {str(p.relative_to(ROOT)): n for p, text in files.items() if (n := len(text.splitlines())) > 500}
    assert not long
    upward = re.compile(r"^\s*(from|import)\s+(semcodec\.(cli|bench)|tools)\b", re.MULTILINE)
    assert not [str(p.relative_to(ROOT)) for p, text in library.items() if upward.search(text)]
