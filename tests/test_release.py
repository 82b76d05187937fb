"""Releasing models: training never touches a released model, and shipping a new one leaves every
file of the earlier ones decoding exactly as their conformance set recorded (tiny models, temp folders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semcodec import bitstream
from semcodec.cli.main import main
from semcodec.codec import Codec
from semcodec.codec.conformance import MANIFEST, decode_outputs_with_threads
from semcodec.errors import WeightsError
from semcodec.training.train import next_model_id
from semcodec.weights import REGISTRY_FILE, load_registry
from tests.conftest import synthetic_image
from tools.release import ReleasePaths, next_minor, ship


def test_revision_ids_and_versions():
    assert next_model_id("vit-hp-192") == "vit-hp-192.r2"
    assert next_model_id("vit-hp-192.r2") == "vit-hp-192.r3"
    assert next_model_id("vit-hp-192", {"vit-hp-192.r2"}) == "vit-hp-192.r3"
    assert next_minor("0.2.0") == "0.3.0" and next_minor("1.9.4") == "1.10.0"


def test_training_into_the_packaged_weights_is_refused(tmp_path):
    """The shipped folder holds released models only: `semcodec train --out weights` says what to do instead."""
    from semcodec.weights import WEIGHTS_DIR

    Image.fromarray(synthetic_image(96, 96)).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--out", str(WEIGHTS_DIR), "--steps", "1"])
    registry = load_registry(WEIGHTS_DIR)
    served = registry.model(registry.quality(registry.default_quality).model)
    assert result.exit_code == 1
    assert f"released in semcodec {served.release} and is frozen" in result.output
    assert f"--init-from {served.name}" in result.output


def test_distilling_a_head_for_a_released_model_is_refused_before_any_work(tmp_path):
    Image.fromarray(synthetic_image(96, 96)).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["distill", "--tower", "efficientnet-lite0", "--data", str(tmp_path)])
    registry = load_registry()
    served = registry.model(registry.quality(registry.default_quality).model)
    assert result.exit_code == 1
    assert f"{served.name} was released in semcodec {served.release} and is frozen" in result.output


@pytest.fixture()
def release_paths(tmp_path) -> ReleasePaths:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / REGISTRY_FILE).write_text(json.dumps({"models": {}, "qualities": {}}))
    version_file = tmp_path / "__init__.py"
    version_file.write_text('__version__ = "0.1.0"\n')
    changelog = tmp_path / "CHANGELOG.md"
    changelog.write_text("# Changelog\n\n## [Unreleased]\n\n## [0.1.0] - 2026-01-01\n\nFirst.\n")
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    for i, name in enumerate(("kodim23.png", "kodim05.png")):
        Image.fromarray(synthetic_image(512, 768, seed=i)).save(kodak / name)
    return ReleasePaths(weights, version_file, changelog, tmp_path / "conformance", kodak)


def _train(data: Path, out: Path, weights: Path, *args: str):
    return CliRunner().invoke(
        main,
        [
            "--weights",
            str(weights),
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--tiny",
            "--batch",
            "2",
            "--crop",
            "64",
            "--save-every",
            "100",
            *args,
        ],
    )


def _assert_set_decodes_as_recorded(folder: Path, codec: Codec) -> int:
    manifest = json.loads((folder / MANIFEST).read_text())
    for record in manifest["streams"]:
        # the thread count the set was recorded with: a tower tail's float32 tokens depend on it
        out = decode_outputs_with_threads(codec, (folder / record["file"]).read_bytes(), 2)
        assert out.hashes == {k: record[k] for k in out.hashes}, record["file"]
    return len(manifest["streams"])


def test_shipping_a_new_model_keeps_every_earlier_file_decoding(tiny_weights, release_paths, tmp_path):
    first = load_registry(tiny_weights).quality(1).model
    assert ship(tiny_weights, first, "the first model", release_paths) == "0.2.0"
    first_set = release_paths.conformance / first
    assert _assert_set_decodes_as_recorded(first_set, Codec(release_paths.weights)) >= 5
    frozen_bytes = {p.name: p.read_bytes() for p in first_set.iterdir()}

    data = tiny_weights.parent / "photos"
    data.mkdir(exist_ok=True)
    for i in range(2):
        Image.fromarray(synthetic_image(96, 128, seed=i)).save(data / f"p{i}.png")
    refused = _train(data, release_paths.weights, release_paths.weights, "--model-name", first, "--steps", "9")
    assert refused.exit_code == 1 and "frozen" in refused.output
    checkpoints = tmp_path / "checkpoints"
    trained = _train(data, checkpoints, release_paths.weights, "--init-from", first, "--steps", "8")
    assert trained.exit_code == 0, trained.output
    second = f"{first}.r2"
    assert load_registry(checkpoints).model(second).info["steps"] == 8

    assert ship(checkpoints, second, "the second model", release_paths) == "0.3.0"
    registry = load_registry(release_paths.weights)
    assert registry.model(first).release == "0.2.0" and registry.model(second).release == "0.3.0"
    assert {level.model for level in registry.qualities.values()} == {second}
    changelog = release_paths.changelog.read_text()
    assert changelog.index("## [Unreleased]") < changelog.index("## [0.3.0]") < changelog.index("## [0.2.0]")
    assert 'version__ = "0.3.0"' in release_paths.version_file.read_text()

    codec = Codec(release_paths.weights)
    assert bitstream.unpack(codec.encode(synthetic_image(64, 64), 1).data).model_id == second
    assert _assert_set_decodes_as_recorded(first_set, codec) == len(
        json.loads((first_set / MANIFEST).read_text())["streams"]
    )
    assert _assert_set_decodes_as_recorded(release_paths.conformance / second, codec) >= 5
    assert {p.name: p.read_bytes() for p in first_set.iterdir()} == frozen_bytes
    first_weights = registry.model(first)
    assert first_weights.sha256 != registry.model(second).sha256

    with pytest.raises(SystemExit, match="released before"):
        ship(checkpoints, second, "again", release_paths)


def test_a_model_keeps_its_own_quality_table_when_qualities_move(tiny_weights, tmp_path):
    """A registry whose quality 1 now means another model's gain must not change what old files mean."""
    raw = json.loads((tiny_weights / REGISTRY_FILE).read_text())
    name = next(iter(raw["models"]))
    raw["models"][name]["qualities"] = {"1": {"gain_index": 0, "lambda": 0.002}, "2": {"gain_index": 1, "lambda": 0.02}}
    raw["qualities"]["1"]["gain_index"] = 1
    (tmp_path / REGISTRY_FILE).write_text(json.dumps(raw))
    from semcodec.errors import WeightsError

    with pytest.raises(WeightsError, match="disagrees"):
        load_registry(tmp_path)
    assert np.isfinite(load_registry(tiny_weights).model(name).level(2).lmbda)


def test_a_failed_release_leaves_every_file_as_it_was(tiny_weights, release_paths, tmp_path):
    import dataclasses

    before = {p: p.read_bytes() for p in (release_paths.version_file, release_paths.changelog)}
    before |= {p: p.read_bytes() for p in release_paths.weights.iterdir()}
    broken = dataclasses.replace(release_paths, kodak=tmp_path / "no-such-folder")
    model = load_registry(tiny_weights).quality(1).model
    with pytest.raises(FileNotFoundError):
        ship(tiny_weights, model, "", broken)
    after = {p: p.read_bytes() for p in (release_paths.version_file, release_paths.changelog)}
    after |= {p: p.read_bytes() for p in release_paths.weights.iterdir()}
    assert after == before and not (release_paths.conformance / model).exists()


def test_a_release_that_would_lose_a_token_space_is_refused(tiny_weights, release_paths):
    """If the model that serves today has a head for a tower, the next one must bring its own."""
    served = {"architecture": "semantic-hyperprior", "config": {}, "file": "old.safetensors", "sha256": "00" * 32}
    served["token_heads"] = {"efficientnet-lite0": {"file": "old.head.safetensors"}}
    registry = {"models": {"old": served}, "qualities": {"1": {"model": "old"}}, "default_quality": 1}
    (release_paths.weights / REGISTRY_FILE).write_text(json.dumps(registry))
    with pytest.raises(SystemExit, match="no head fitted to its weights for efficientnet-lite0"):
        ship(tiny_weights, load_registry(tiny_weights).quality(1).model, "", release_paths)
    assert json.loads((release_paths.weights / REGISTRY_FILE).read_text()) == registry


def test_shipping_a_semantic_layer_writes_its_set_and_keeps_the_model(tiny_weights, release_paths, tmp_path):
    import torch

    from semcodec.models.semantic_layer import SemanticLayer, SemanticLayerConfig
    from semcodec.training.semantic_layer import TINY_ARCH, save_checkpoint
    from tools.release import ship_semantic_layer

    first = load_registry(tiny_weights).quality(1).model
    ship(tiny_weights, first, "the first model", release_paths)
    torch.manual_seed(0)
    codec = Codec(release_paths.weights)
    tower = codec.tower("efficientnet-lite0")
    checkpoint = tmp_path / "run"
    info = {"tower": "efficientnet-lite0", "tower_sha256": tower.source_sha256, "split_block": 7}
    save_checkpoint(SemanticLayer(SemanticLayerConfig(**TINY_ARCH)), checkpoint, "sl-run", 5, info)
    assert ship_semantic_layer(checkpoint, "sl-run", "sl-test", "", release_paths, (0, 2)) == "0.3.0"
    registry = load_registry(release_paths.weights)
    assert registry.semantic_layers["sl-test"].release == "0.3.0"
    assert registry.semantic_layers["sl-test"].encoder_gains == (0, 2)
    assert registry.semantic_layer_for("efficientnet-lite0").name == "sl-test"
    assert registry.model(first).release == "0.2.0"  # the pixel model is untouched
    folder = release_paths.conformance / "sl-test"
    assert _assert_set_decodes_as_recorded(folder, Codec(release_paths.weights)) >= 4
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["semantic_layer"] == "sl-test" and manifest["model"] == first
    assert "`sl-test`" in release_paths.changelog.read_text()
    with pytest.raises(SystemExit, match="released before"):
        ship_semantic_layer(checkpoint, "sl-run", "sl-test", "", release_paths)
    # the tiny model has no head: without its semantic layer the token space has nothing to serve it
    with pytest.raises(WeightsError, match="no token head"):
        Codec(release_paths.weights).encode(
            synthetic_image(64, 64), 1, token_space="efficientnet-lite0", semantic_layer=False
        )


def test_the_registry_editor_refuses_a_registry_the_codec_would_not_load(tiny_weights, tmp_path):
    import shutil

    from semcodec.errors import WeightsError
    from semcodec.weights import REGISTRY_FILE
    from semcodec.weights.editor import RegistryEditor

    root = tmp_path / "w"
    shutil.copytree(tiny_weights, root)
    before = (root / REGISTRY_FILE).read_bytes()
    editor = RegistryEditor(root)
    editor.serve("vit-hp-small", {2: (0, 0.5)})  # quality 2 at another gain than the model's own table says
    with pytest.raises(WeightsError, match="quality 2 disagrees"):
        editor.save()
    assert (root / REGISTRY_FILE).read_bytes() == before and not list(root.glob(".registry*"))
    editor = RegistryEditor(root)
    editor.serve("vit-hp-small", {2: (1, 0.02)}, default_quality=2)
    editor.save()
    assert load_registry(root).default_quality == 2


def test_a_model_shipped_for_the_high_rungs_leaves_the_low_ones_to_their_model(tiny_weights, release_paths):
    """A ladder's top rungs from a new model: the old one keeps serving (and writing) the low qualities,
    the new one's frozen table and conformance set hold only its rungs."""
    first = load_registry(tiny_weights).quality(1).model
    ship(tiny_weights, first, "the first model", release_paths)
    editor = json.loads((tiny_weights / REGISTRY_FILE).read_text())
    second = f"{first}.top"
    entry = editor["models"].pop(first)
    editor["models"][second] = {**entry, "file": f"{second}.safetensors", "token_heads": {}}
    editor["qualities"] = {q: {**v, "model": second} for q, v in editor["qualities"].items()}
    checkpoints = release_paths.weights.parent / "top-checkpoints"
    checkpoints.mkdir()
    (checkpoints / REGISTRY_FILE).write_text(json.dumps(editor))
    (checkpoints / f"{second}.safetensors").write_bytes((tiny_weights / entry["file"]).read_bytes())
    with pytest.raises(SystemExit, match="no quality"):
        ship(checkpoints, second, "", release_paths, qualities=[5])
    assert ship(checkpoints, second, "the top rung", release_paths, qualities=[2], default_quality=2) == "0.3.0"
    registry = load_registry(release_paths.weights)
    assert registry.quality(1).model == first and registry.quality(2).model == second
    assert sorted(registry.model(second).qualities) == [2] and registry.default_quality == 2
    codec = Codec(release_paths.weights)
    assert bitstream.unpack(codec.encode(synthetic_image(64, 64), 1).data).model_id == first
    assert bitstream.unpack(codec.encode(synthetic_image(64, 64), 2).data).model_id == second
    manifest = json.loads((release_paths.conformance / second / MANIFEST).read_text())
    assert {r["quality"] for r in manifest["streams"]} == {2}
    assert _assert_set_decodes_as_recorded(release_paths.conformance / first, codec) >= 5
    assert "now the encoder's model at qualities 2" in release_paths.changelog.read_text()
