"""A model's conformance set: golden files a release writes once and every later build must decode.

:func:`write_set` encodes a few Kodak images (whole and cropped, every quality and token space the
release writes) with the command line of the build being released and records each stream's
decoded pixels and tokens; :func:`add_format_streams` adds the streams of a new format version to an
existing set. ``release.py`` calls these when it ships; ``write_conformance.py`` alone.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from semcodec.fileio import write_text_atomic
from semcodec.shared_data import DATA_ROOT
from semcodec.sysinfo import cpu_name

if TYPE_CHECKING:
    from semcodec import bitstream
    from semcodec.codec import Codec
    from semcodec.codec.conformance import DecodedOutputs

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (the ``semcodec`` package in an editable install)."""
CONFORMANCE = ROOT / "tests" / "conformance"
KODAK = DATA_ROOT / "kodak"


@dataclass(frozen=True)
class Source:
    """A small crop of a Kodak image: odd sizes exercise padding, small ones keep the set light."""

    name: str
    file: str
    box: tuple[int, int, int, int]  # left, top, right, bottom
    beside: tuple[str, ...] = ()
    """More Kodak images whose same box is put to the right, in order (a strip wider than one photo)."""

    def write(self, kodak: Path, folder: Path) -> Path:
        path = folder / f"{self.name}.png"
        crops = [np.asarray(Image.open(kodak / f).convert("RGB").crop(self.box)) for f in (self.file, *self.beside)]
        Image.fromarray(np.concatenate(crops, axis=1)).save(path)
        return path

    @property
    def description(self) -> str:
        files = " + ".join((self.file, *self.beside))
        return f"{files} cropped to {self.box} (left, top, right, bottom)" + (", side by side" if self.beside else "")


SOURCES = (
    Source("kodim23-128x96", "kodim23.png", (300, 150, 428, 246)),
    Source("kodim05-100x76", "kodim05.png", (200, 200, 300, 276)),
)
TILED_SOURCE = Source("kodak-strip-2112x32", "kodim01.png", (0, 240, 704, 272), ("kodim02.png", "kodim03.png"))
"""Wider than one latent tile (2048 px): a tiled file (format 5 on), small enough to keep."""


@dataclass(frozen=True)
class Case:
    stream: str
    source: Source
    args: tuple[str, ...]


def cases(qualities: list[int], token_spaces: list[str]) -> list[Case]:
    """Every quality for each source, one pruned file and one file per token space."""
    out = [Case(f"{s.name}-q{q}", s, ("-q", str(q))) for s in SOURCES for q in qualities]
    middle = qualities[len(qualities) // 2]
    out.append(Case(f"{SOURCES[0].name}-q{middle}-tokens12", SOURCES[0], ("-q", str(middle), "--tokens", "12")))
    for space in token_spaces:
        out.append(
            Case(
                f"{SOURCES[0].name}-q{qualities[0]}-{space}",
                SOURCES[0],
                ("-q", str(qualities[0]), "--token-space", space),
            )
        )
    return out


def semantic_cases(qualities: list[int], tower: str) -> list[Case]:
    """A semantic layer's set: its tower's token-space file at every quality, of both sources."""
    return [
        Case(f"{s.name}-q{q}-{tower}", s, ("-q", str(q), "--token-space", tower)) for s in SOURCES for q in qualities
    ]


def run_cli(build: Path | None, *args: str, weights_dir: Path | None = None) -> None:
    """``semcodec ARGS``: in this process for this checkout, else in a subprocess that imports ``build``'s
    package with its own packaged weights (``weights_dir``: another weights folder)."""
    weights = ("--weights", str(weights_dir)) if weights_dir is not None else ()
    if build is None:
        from semcodec.cli.main import main

        try:
            main.main(args=[*weights, *args], prog_name="semcodec", standalone_mode=False)
        except Exception as exc:
            raise SystemExit(f"semcodec {' '.join(args)} failed: {exc}") from None
        return
    env = dict(os.environ)
    env["PYTHONPATH"] = str(build)
    env.pop("SEMCODEC_WEIGHTS", None)
    cmd = [sys.executable, "-m", "semcodec.cli", *weights, *args]
    done = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


def decode_with_build(
    build: Path, stream: Path, work: Path, weights_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and tokens as the earlier build's own ``semcodec decode`` writes them."""
    from safetensors.numpy import load_file

    png, tokens = work / f"{stream.stem}.png", work / f"{stream.stem}.safetensors"
    run_cli(build, "decode", str(stream), "-o", str(png), "--force", weights_dir=weights_dir)
    run_cli(build, "decode", str(stream), "--target", "tokens", "-o", str(tokens), "--force", weights_dir=weights_dir)
    return np.asarray(Image.open(png).convert("RGB")), load_file(tokens)["tokens"].astype(np.float32)


def write_set(
    model_id: str,
    out: Path,
    kodak: Path,
    written_by: str,
    build: Path | None = None,
    include: list[Path] | tuple[Path, ...] = (),
    weights_dir: Path | None = None,
    semantic_layer: str | None = None,
) -> Path:
    """Encode, decode and record the set of ``model_id`` in ``out/<model_id>``; refuse to overwrite.

    Streams are encoded by ``semcodec encode`` of ``build`` (a folder holding an earlier build's
    package; ``None``: this checkout), which must write with ``model_id``. ``semantic_layer``: the
    set of that released semantic layer instead (``out/<layer id>``: its tower's token-space files
    of ``model_id`` at every quality, which carry the layer)."""
    import torch

    from semcodec import __version__, bitstream
    from semcodec.codec import Codec
    from semcodec.codec.conformance import MANIFEST, REFERENCE

    target = out / (semantic_layer or model_id)
    if target.exists():
        raise SystemExit(f"{target} exists: conformance sets are written once and never regenerated")
    codec = Codec(weights_dir)
    entry = codec.registry.model(model_id)
    if not entry.frozen:
        raise SystemExit(f"{model_id} is not released (no 'release' in the registry): ship it first")
    layer = codec.registry.semantic_layers.get(semantic_layer) if semantic_layer else None
    if semantic_layer and (layer is None or layer.release is None):
        raise SystemExit(f"semantic layer {semantic_layer} is not released: ship it first")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{model_id}.", dir=out))
    streams, arrays = [], {}
    try:
        planned = (
            semantic_cases(sorted(entry.qualities), layer.tower)
            if layer
            else cases(sorted(entry.qualities), sorted(entry.token_heads))
        )
        for case in planned:
            source = case.source.write(kodak, work)
            run_cli(build, "encode", str(source), str(work / f"{case.stream}.smc"), *case.args, weights_dir=weights_dir)
            source.unlink()
        files = [work / f"{c.stream}.smc" for c in planned]
        for extra in include:
            shutil.copyfile(extra, work / extra.name)
            files.append(work / extra.name)
        for path, case in zip(files, [*planned, *[None] * len(include)], strict=True):
            data = path.read_bytes()
            header = bitstream.unpack(data)
            chunk = header.find(bitstream.SEMANTIC_CHUNK)
            if layer and (
                chunk is None or bitstream.unpack_semantic(chunk, header.version).weights_hash != layer.short_hash
            ):
                raise SystemExit(f"{path.name} does not carry semantic layer {layer.name}")
            if header.model_id != model_id or header.weights_hash != entry.short_hash:
                raise SystemExit(
                    f"{path.name} was written by {header.model_id} {header.weights_hash.hex()}, not {model_id}"
                )
            record, two = _record_stream(codec, path.name, data, header, case, arrays)
            if build is not None:
                pixels, tokens = decode_with_build(build, path, work, weights_dir)
                if not (np.array_equal(pixels, two.pixels) and np.array_equal(tokens, two.tokens)):
                    raise SystemExit(f"{path.name}: the earlier build decodes it differently from this one")
                record["earlier_build_decodes_identically"] = True
            streams.append(record)
        for leftover in work.glob("*.png"):
            leftover.unlink()
        for leftover in work.glob("*.safetensors"):
            leftover.unlink()
        np.savez_compressed(work / REFERENCE, **arrays)
        manifest = {
            "model": model_id,
            "weights_sha256": entry.sha256,
            "release": entry.release,
            **({"semantic_layer": layer.name, "semantic_layer_sha256": layer.sha256} if layer else {}),
            "written_by": written_by,
            "recorded_by": f"semcodec {__version__}",
            "recorded_on": {
                "date": datetime.date.today().isoformat(),
                "machine": f"{platform.machine()} {cpu_name()}, {torch.get_num_threads()} threads, "
                f"torch {torch.__version__}",
            },
            "exact": "symbols everywhere; pixels and tokens on this CPU kind and thread count (the hashes), "
            "elsewhere within the bounds of semcodec.codec.conformance",
            "streams": streams,
        }
        write_text_atomic(work / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        os.chmod(work, 0o755)
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"wrote {target} ({len(streams)} streams)")
    return target


def _record_stream(
    codec: Codec, name: str, data: bytes, header: bitstream.Header, case: Case | None, arrays: dict[str, np.ndarray]
) -> tuple[dict, DecodedOutputs]:
    """A stream's manifest record (what it decodes to with 2 and 1 threads); its reference pixels and
    tokens go into ``arrays``."""
    from semcodec.codec.conformance import decode_outputs_with_threads

    two = decode_outputs_with_threads(codec, data, 2)
    one = decode_outputs_with_threads(codec, data, 1)
    record = {
        "file": name,
        "format_version": header.version,
        "quality": header.quality,
        "size": [header.width, header.height],
        "bytes": len(data),
        "token_space": two.token_space,
        **two.hashes,
        "same_with_1_thread": {k.removesuffix("_sha256"): one.hashes[k] == v for k, v in two.hashes.items()},
    }
    if case is not None:
        record["encode"] = f"semcodec encode {case.source.name}.png {name} {' '.join(case.args)}"
        record["source"] = case.source.description
    arrays[f"{name}/pixels"] = two.pixels
    arrays[f"{name}/tokens"] = two.tokens.astype(np.float16)
    return record, two


def format_cases(qualities: list[int], version: int) -> list[Case]:
    """The streams a new format version adds to an earlier release's set: both padded sources at the
    middle quality, and the pruned file (padding and pruning masks together). From version 4 default
    files carry the semantic layer, so the pixel-only files (plain and pruned) are added beside them;
    version 5 (tiled files only) adds a strip wider than one latent tile, as a default and a pixel-only
    file; version 6 (the lean header, every file) adds all of them."""
    middle = qualities[len(qualities) // 2]
    plain = [Case(f"format-v{version}-{s.name}-q{middle}", s, ("-q", str(middle))) for s in SOURCES]
    source, args = SOURCES[0], ("-q", str(middle))
    pruned = Case(f"format-v{version}-{source.name}-q{middle}-tokens12", source, (*args, "--tokens", "12"))
    if version < 4:
        return [*plain, pruned]
    pixels = ("--token-space", "none")
    pixel_only = [
        Case(f"format-v{version}-{source.name}-q{middle}-pixels", source, (*args, *pixels)),
        Case(f"format-v{version}-{source.name}-q{middle}-pixels-tokens12", source, (*args, *pixels, "--tokens", "12")),
    ]
    if version < 5:
        return [*plain, pruned, *pixel_only]
    strip = TILED_SOURCE
    tiled = [
        Case(f"format-v{version}-{strip.name}-q{middle}", strip, args),
        Case(f"format-v{version}-{strip.name}-q{middle}-pixels", strip, (*args, *pixels)),
    ]
    if version < 6:  # version 5 is written for tiled files only: the others stay version 4
        return tiled
    return [*plain, pruned, *pixel_only, *tiled]


def add_format_streams(model_id: str, out: Path, kodak: Path, written_by: str) -> Path:
    """Add streams in this build's format version to the existing set of ``model_id``, so files of the
    new version written with an earlier release's weights are pinned too. The set's earlier streams,
    their records and reference arrays stay exactly as they are; refuses a version the set already has."""
    import torch

    from semcodec import bitstream
    from semcodec.codec import Codec
    from semcodec.codec.conformance import MANIFEST, REFERENCE

    target = out / model_id
    manifest = json.loads((target / MANIFEST).read_text())
    version = bitstream.FORMAT_VERSION
    if any(s["format_version"] == version for s in manifest["streams"]):
        raise SystemExit(f"{target} already has format version {version} streams: sets are never rewritten")
    codec = Codec()
    entry = codec.registry.model(model_id)
    if entry.sha256 != manifest["weights_sha256"]:
        raise SystemExit(f"{model_id}'s weights differ from those its set was written with")
    with np.load(target / REFERENCE) as existing:
        arrays = dict(existing)
    work = Path(tempfile.mkdtemp(prefix=f".{model_id}.v{version}.", dir=out))
    added = []
    try:
        for case in format_cases(sorted(entry.qualities), version):
            source = case.source.write(kodak, work)
            path = work / f"{case.stream}.smc"
            run_cli(None, "encode", str(source), str(path), *case.args)
            source.unlink()
            data = path.read_bytes()
            record, _ = _record_stream(codec, path.name, data, bitstream.unpack(data), case, arrays)
            record["added_by"] = (
                f"{written_by} (format version {version}), on {datetime.date.today().isoformat()}, "
                f"{platform.machine()} {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
            )
            added.append(record)
        np.savez_compressed(work / REFERENCE, **arrays)
        for record in added:
            if (target / record["file"]).exists():
                raise SystemExit(f"{target / record['file']} exists: sets are never rewritten")
        manifest["streams"] += added
        for record in added:
            shutil.copyfile(work / record["file"], target / record["file"])
        os.replace(work / REFERENCE, target / REFERENCE)
        write_text_atomic(target / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"added {len(added)} format version {version} streams to {target}")
    return target
