"""Wall time and peak memory of whole ``semcodec`` commands, start-up included (what a user waits for).

Each command runs in a fresh process ``repeats`` times; the table shows the median wall time and
the largest peak RSS (GNU time's, so ``/usr/bin/time`` must exist).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run_command(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit status) of one fresh ``semcodec`` process.

    Started by GNU time, a small process: a child forked from this one (torch loaded) would
    report this process's memory as its own peak.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        command = ["/usr/bin/time", "-f", "%e %M", "-o", report.name, sys.executable, "-m", "semcodec.cli", *args]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, peak_kb = report.read().split()[-2:]
    return float(wall), int(peak_kb) / 1024, done.returncode


def commands(image: Path, work: Path) -> dict[str, list[str]]:
    bitstream = work / "image.smc"
    return {  # encode first: the later commands read its file
        "encode": ["encode", str(image), str(bitstream), "--force", "--quiet"],
        "--version": ["--version"],
        "encode (missing input)": ["encode", str(work / "missing.png"), str(work / "x.smc")],
        "decode -o x.jpg (refused)": ["decode", str(bitstream), "-o", str(work / "x.jpg")],
        "info": ["info", str(bitstream)],
        "decode": ["decode", str(bitstream), "-o", str(work / "out.png"), "--force"],
        "decode --target tokens": ["decode", str(bitstream), "--target", "tokens", "-o", str(work / "t.npy"), "-f"],
    }


def run(image: Path, repeats: int = 3) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name, args in commands(image, work).items():
            walls, peaks, codes = [], [], set()
            for _ in range(repeats):
                wall, peak, code = run_command(args)
                walls.append(wall)
                peaks.append(peak)
                codes.add(code)
            rows.append({"command": name, "wall_s": statistics.median(walls), "peak_mb": max(peaks), "exit": codes})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| command | wall s (median) | peak RSS MB | exit |", "|---|---:|---:|---:|"]
    for r in rows:
        exits = "/".join(str(c) for c in sorted(r["exit"]))
        lines.append(f"| `semcodec {r['command']}` | {r['wall_s']:.2f} | {r['peak_mb']:.0f} | {exits} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(table(run(Path(sys.argv[1]), int(os.environ.get("REPEATS", 3)))))
