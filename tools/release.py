"""Releasing a model: freeze a training checkpoint under its id, and write its conformance set.

Released models are immutable (README, "Compatibility"): :func:`ship` copies a checkpoint's weights
into the packaged weights folder under a model id that never existed, records the release in the
registry, points the qualities at it, bumps the minor version, adds a CHANGELOG entry and writes the
model's conformance set (:func:`conformance_set.write_set`), which is never rewritten afterwards.
"""

from __future__ import annotations

import datetime
import re
import shutil
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from semcodec.fileio import write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conformance_set.py beside this script
from conformance_set import CONFORMANCE, KODAK, ROOT, write_set  # noqa: E402

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
    checkpoints: Path,
    model_id: str,
    notes: str,
    paths: ReleasePaths = ReleasePaths(),
    drop_heads: bool = False,
    qualities: Collection[int] | None = None,
    default_quality: int | None = None,
) -> str:
    """Release ``model_id`` from the training folder ``checkpoints``; return the new version.

    The checkpoint's weights (and the token heads distilled for exactly these weights) are copied under
    the same id into ``paths.weights``, which must not know the id yet: released ids are never reused.
    The new model serves every quality of its table from then on, or only ``qualities`` (then its
    frozen table holds just those, and the other qualities keep their models: a model for the high
    rungs of a ladder); every older model stays listed so its files keep decoding. A token space the
    model serving the default quality has and the new one has no fitted head for would stop
    encoding: refused unless ``drop_heads``. ``default_quality``: the encoder's default from now on.
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
    levels = dict(source.qualities)
    if qualities is not None:
        unknown = sorted(set(qualities) - set(levels))
        if unknown or not qualities:
            raise SystemExit(f"{model_id} has no quality {unknown or 'at all'} in its table to serve")
        levels = {q: v for q, v in levels.items() if q in set(qualities)}
    default = default_quality if default_quality is not None else target.default_quality
    takes_default = qualities is None or default in levels
    served = target.serving_model(target.default_quality) if target.default_quality is not None else None
    served_heads = target.model(served).get("token_heads", {}) if served and takes_default else {}
    lost = sorted(set(served_heads) - set(heads))
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
        entry["qualities"] = {str(q): {"gain_index": v.gain_index, "lambda": v.lmbda} for q, v in levels.items()}
        target.put_model(model_id, entry)
        table = {q: (v.gain_index, v.lmbda) for q, v in levels.items()}
        if qualities is None:
            keep = default if default in table else min(table)
            target.serve_only(model_id, table, keep)
        else:
            target.serve(model_id, table, default)
        target.save()  # refuses (one line) a registry the codec would not load
        _set_version(paths.version_file, version)
        listed = None if qualities is None else sorted(levels)  # None: "every quality"
        _add_changelog_entry(paths.changelog, version, model_id, source.sha256, notes, listed)
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


def _add_changelog_entry(
    changelog: Path, version: str, model_id: str, sha256: str, notes: str, qualities: list[int] | None = None
) -> None:
    """Turn ``[Unreleased]`` into the release's section (Keep a Changelog), the model listed first."""
    where = "every quality" if qualities is None else "qualities " + ", ".join(str(q) for q in qualities)
    line = (
        f"Model `{model_id}` (weights sha256 `{sha256[:16]}...`), now the encoder's model at {where}; "
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
    checkpoint: Path,
    source_id: str,
    layer_id: str,
    notes: str,
    paths: ReleasePaths = ReleasePaths(),
    encoder_gains: tuple[int, ...] | None = None,
) -> str:
    """Release semantic layer ``source_id`` of the training folder ``checkpoint`` (``semcodec
    train-semantic-layer --out``) as ``layer_id`` (never used before), the layer the encoder
    writes for its tower from now on (``encoder_gains``: the gains it tries, fewest bytes first);
    bump the minor version, add the CHANGELOG line and write the layer's conformance set with the
    current model. Return the new version."""
    from semcodec.training.semantic_layer import register
    from semcodec.weights import load_registry
    from semcodec.weights.editor import RegistryEditor

    if RegistryEditor(paths.weights).semantic_layer(layer_id) or (paths.weights / f"{layer_id}.safetensors").exists():
        raise SystemExit(f"semantic layer {layer_id} was released before: an id names one set of weights forever")
    version = next_minor(current_version(paths.version_file))
    with _all_or_nothing(paths, [paths.weights / f"{layer_id}.safetensors"]):
        sha = register(
            checkpoint,
            source_id,
            layer_id,
            paths.weights,
            encoder_default=True,
            release=version,
            encoder_gains=encoder_gains,
        )
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


def ship_conditioned(checkpoint: Path, model_id: str, notes: str, paths: ReleasePaths = ReleasePaths()) -> str:
    """Release ``model_id`` of the training folder ``checkpoint`` (``semcodec train-semantic-condition
    --out``), a pixel model that reads a released semantic layer, as the encoder's model in place of
    its base for files carrying that layer; bump the minor version, add the CHANGELOG line and write
    its conformance set (default files at each quality of its table). Return the new version."""
    from semcodec.training.semantic_condition import register_conditioned
    from semcodec.weights import load_registry
    from semcodec.weights.editor import RegistryEditor

    source = load_registry(checkpoint).model(model_id)
    target = RegistryEditor(paths.weights)
    if target.has_model(model_id) or target.retired(model_id) or (paths.weights / source.file).exists():
        raise SystemExit(f"{model_id} was released before: a model id names one set of weights forever")
    condition = source.semantic_condition
    if condition is None:
        raise SystemExit(f"{model_id} in {checkpoint} reads no semantic layer: release it with ship_model.py")
    if target.semantic_layer(condition.layer).get("sha256") != condition.layer_sha256:
        raise SystemExit(f"{model_id} reads semantic layer {condition.layer}, not installed with those weights")
    version = next_minor(current_version(paths.version_file))
    with _all_or_nothing(paths, [paths.weights / source.file]):
        sha = register_conditioned(checkpoint, model_id, paths.weights, release=version)
        _set_version(paths.version_file, version)
        line = (
            f"Model `{model_id}` (weights sha256 `{sha[:16]}...`): files carrying semantic layer `{condition.layer}` "
            f"code their pixels with it in place of `{condition.base}`, whose entropy model now reads what that "
            f"layer sent; its conformance set is `tests/conformance/{model_id}/`."
        )
        _add_changelog_line(paths.changelog, version, line + (f"\n- {notes}" if notes else ""))
        written_by = f"semcodec {version} (its release build: this checkout)"
        write_set(model_id, paths.conformance, paths.kodak, written_by, weights_dir=paths.weights)
    return version
