"""Releasing a model: freeze a training checkpoint under its id, and write its conformance set.

Released models are immutable (README, "Compatibility"): :func:`ship` copies a checkpoint's weights
into the packaged weights folder under a model id that never existed, records the release in the
registry, points the qualities at it, bumps the minor version, adds a CHANGELOG entry and writes the
model's conformance set (:func:`write_set`), which is never rewritten afterwards.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
    version 5 (tiled files only) adds a strip wider than one latent tile, as a default and a pixel-only file."""
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
    strip = TILED_SOURCE  # version 5 is written for tiled files only: the others stay version 4
    return [
        Case(f"format-v{version}-{strip.name}-q{middle}", strip, args),
        Case(f"format-v{version}-{strip.name}-q{middle}-pixels", strip, (*args, *pixels)),
    ]


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


VERSION_FILE = ROOT / "__init__.py"
CHANGELOG = ROOT / "CHANGELOG.md"
_VERSION = re.compile(r'^__version__ = "(\d+)\.(\d+)\.(\d+)"$', re.MULTILINE)


def current_version(version_file: Path = VERSION_FILE) -> str:
    match = _VERSION.search(version_file.read_text())
    if match is None:
        raise SystemExit(f'no __version__ = "X.Y.Z" line in {version_file}')
    return ".".join(match.groups())


def next_minor(version: str) -> str:
    """A shipped model is a backward-compatible addition: the minor version goes up."""
    major, minor, _ = (int(v) for v in version.split("."))
    return f"{major}.{minor + 1}.0"


@dataclass(frozen=True)
class ReleasePaths:
    """Where a release writes: the packaged weights, the version line, the changelog, the golden files."""

    weights: Path = ROOT / "weights"
    version_file: Path = VERSION_FILE
    changelog: Path = CHANGELOG
    conformance: Path = CONFORMANCE
    kodak: Path = KODAK


def ship(
    checkpoints: Path, model_id: str, notes: str, paths: ReleasePaths = ReleasePaths(), drop_heads: bool = False
) -> str:
    """Release ``model_id`` from the training folder ``checkpoints``; return the new version.

    The checkpoint's weights (and the token heads distilled for exactly these weights) are copied under
    the same id into ``paths.weights``, which must not know the id yet: released ids are never reused.
    The new model serves every quality from then on; every older model stays listed so its files
    keep decoding. A token space the current model serves and the new one has no fitted head for
    would stop encoding: refused unless ``drop_heads``.
    """
    from semcodec.weights import load_registry, sha256_file
    from semcodec.weights.editor import RegistryEditor

    source = load_registry(checkpoints).model(model_id)
    target = RegistryEditor(paths.weights)
    if target.has_model(model_id) or target.retired(model_id):
        raise SystemExit(f"{model_id} was released before: a model id names one set of weights forever")
    if source.frozen:
        raise SystemExit(f"{model_id} in {checkpoints} is marked released already")
    if sha256_file(checkpoints / source.file) != source.sha256:
        raise SystemExit(f"{checkpoints / source.file} fails its sha256 check")
    version = next_minor(current_version(paths.version_file))
    files = {source.file: source.sha256}
    heads = {}
    for space, head in source.token_heads.items():
        if head.codec_sha256 == source.sha256:  # stale heads (other weights) do not ship
            heads[space] = head.record
            files[head.file] = head.sha256
    served = target.serving_model(target.default_quality) if target.default_quality is not None else None
    lost = sorted(set(target.model(served).get("token_heads", {}) if served else {}) - set(heads))
    if lost and not drop_heads:
        raise SystemExit(
            f"{model_id} has no head fitted to its weights for {', '.join(lost)}, which {served} serves: "
            f"re-fit it first (semcodec --weights {checkpoints} distill --tower ...)"
        )
    for name in files:
        if (paths.weights / name).exists():
            raise SystemExit(f"{paths.weights / name} exists: a released file is never overwritten")
    with _all_or_nothing(paths, [paths.weights / name for name in files]):
        for name, sha in files.items():
            shutil.copyfile(checkpoints / name, paths.weights / name)
            if sha256_file(paths.weights / name) != sha:
                raise SystemExit(f"copy of {name} does not match its sha256")
        entry = {**RegistryEditor(checkpoints).model(model_id), "release": version, "token_heads": heads}
        entry["qualities"] = {
            str(q): {"gain_index": v.gain_index, "lambda": v.lmbda} for q, v in source.qualities.items()
        }
        target.put_model(model_id, entry)
        table = {q: (v.gain_index, v.lmbda) for q, v in source.qualities.items()}
        keep = target.default_quality if target.default_quality in table else min(table)
        target.serve_only(model_id, table, keep)
        target.save()  # refuses (one line) a registry the codec would not load
        _set_version(paths.version_file, version)
        _add_changelog_entry(paths.changelog, version, model_id, source.sha256, notes)
        written_by = f"semcodec {version} (its release build: this checkout)"
        write_set(model_id, paths.conformance, paths.kodak, written_by, weights_dir=paths.weights)
    return version


@contextmanager
def _all_or_nothing(paths: ReleasePaths, new_files: list[Path]) -> Iterator[None]:
    """A half-done release is no release: on any failure inside, the registry, version file and
    changelog get their texts back and ``new_files`` are removed."""
    from semcodec.weights import REGISTRY_FILE

    originals = {
        path: path.read_text() if path.exists() else None
        for path in (paths.weights / REGISTRY_FILE, paths.version_file, paths.changelog)
    }
    try:
        yield
    except BaseException:
        for path, text in originals.items():
            if text is not None:
                write_text_atomic(path, text)
        for path in new_files:
            path.unlink(missing_ok=True)
        raise


def _set_version(version_file: Path, version: str) -> None:
    text = version_file.read_text()
    write_text_atomic(version_file, _VERSION.sub(f'__version__ = "{version}"', text, count=1))


def _add_changelog_entry(changelog: Path, version: str, model_id: str, sha256: str, notes: str) -> None:
    """Turn ``[Unreleased]`` into the release's section (Keep a Changelog), the model listed first."""
    line = (
        f"Model `{model_id}` (weights sha256 `{sha256[:16]}...`), now the encoder's model at every quality; "
        f"its conformance set is `tests/conformance/{model_id}/`. Every earlier model still decodes."
        + (f"\n- {notes}" if notes else "")
    )
    _add_changelog_line(changelog, version, line)


def _add_changelog_line(changelog: Path, version: str, line: str) -> None:
    """``[Unreleased]`` becomes the release's section with ``line`` first under "Added"."""
    text = changelog.read_text() if changelog.exists() else "# Changelog\n\n## [Unreleased]\n"
    line = f"- {line}\n"
    unreleased = re.search(r"^## \[Unreleased\]\n", text, re.MULTILINE)
    if unreleased is None:
        text = text.rstrip("\n") + "\n\n## [Unreleased]\n"
        unreleased = re.search(r"^## \[Unreleased\]\n", text, re.MULTILINE)
    following = re.search(r"^## \[", text[unreleased.end() :], re.MULTILINE)
    end = unreleased.end() + following.start() if following else len(text)
    body = text[unreleased.end() : end].strip("\n")
    if "### Added\n\n" in body:
        body = body.replace("### Added\n\n", "### Added\n\n" + line, 1)
    else:
        body = f"### Added\n\n{line}" + (f"\n{body}" if body else "")
    section = f"## [{version}] - {datetime.date.today().isoformat()}\n\n{body.rstrip()}\n\n"
    write_text_atomic(changelog, text[: unreleased.end()] + "\n" + section + text[end:])


def ship_semantic_layer(
    checkpoint: Path, source_id: str, layer_id: str, notes: str, paths: ReleasePaths = ReleasePaths()
) -> str:
    """Release semantic layer ``source_id`` of the training folder ``checkpoint`` (``semcodec
    train-semantic-layer --out``) as ``layer_id`` (never used before), the layer the encoder
    writes for its tower from now on; bump the minor version, add the CHANGELOG line and write the
    layer's conformance set with the current model. Return the new version."""
    from semcodec.training.semantic_layer import register
    from semcodec.weights import load_registry
    from semcodec.weights.editor import RegistryEditor

    if RegistryEditor(paths.weights).semantic_layer(layer_id) or (paths.weights / f"{layer_id}.safetensors").exists():
        raise SystemExit(f"semantic layer {layer_id} was released before: an id names one set of weights forever")
    version = next_minor(current_version(paths.version_file))
    with _all_or_nothing(paths, [paths.weights / f"{layer_id}.safetensors"]):
        sha = register(checkpoint, source_id, layer_id, paths.weights, encoder_default=True, release=version)
        registry = load_registry(paths.weights)
        model_id = registry.quality(registry.default_quality).model
        _set_version(paths.version_file, version)
        tower = registry.semantic_layers[layer_id].tower
        line = (
            f"Semantic layer `{layer_id}` (weights sha256 `{sha[:16]}...`): `--token-space {tower}` files carry "
            f"the tower's own map, coded at the encoder; its conformance set is `tests/conformance/{layer_id}/`."
        )
        _add_changelog_line(paths.changelog, version, line + (f"\n- {notes}" if notes else ""))
        written_by = f"semcodec {version} (its release build: this checkout)"
        write_set(
            model_id, paths.conformance, paths.kodak, written_by, weights_dir=paths.weights, semantic_layer=layer_id
        )
    return version
