"""Pixel layers that read the semantic layer (issue 56): exact at both ends, only with the layer's files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from semcodec import bitstream
from semcodec.cli.main import main
from semcodec.codec import Codec
from semcodec.codec.conformance import decode_outputs_with_threads
from semcodec.codec.semantic_condition import on_latent_grid
from semcodec.errors import BitstreamError, WeightsError
from semcodec.training.semantic_condition import grown_with_refiner, register_conditioned, save_conditioned
from semcodec.weights import REGISTRY_FILE, WEIGHTS_DIR, load_registry

CONDITIONED = "vit-hp-192.test-s"


def _packaged_copy(root: Path) -> Path:
    """The packaged weights in ``root`` (files linked, registry copied)."""
    raw = json.loads((WEIGHTS_DIR / REGISTRY_FILE).read_text())
    (root / REGISTRY_FILE).write_text(json.dumps(raw))
    for path in WEIGHTS_DIR.glob("*.safetensors"):
        (root / path.name).symlink_to(path)
    return root


def _conditioned_weights(tmp_path_factory, codec: Codec, zero: bool) -> Path:
    registry = codec.registry
    base = registry.quality(1).model
    layer = registry.semantic_layer_for(registry.default_token_space)
    channels = codec.semantic_coder(layer.name).layer.config.latent_channels
    model = grown_with_refiner(codec.model(base)[0], channels, hidden=16)
    if not zero:  # a refiner that moves every mean and scale: the test must see the condition used
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.semantic_refiner[-1].parameters():
                p.normal_(0, 0.02)
    run = tmp_path_factory.mktemp("condition-run")
    save_conditioned(run, model, CONDITIONED, registry.model(base), layer, {"steps": 0})
    root = _packaged_copy(tmp_path_factory.mktemp("condition-weights"))
    register_conditioned(run, CONDITIONED, root)
    return root


@pytest.fixture(scope="module")
def conditioned_weights(tmp_path_factory, codec) -> Path:
    return _conditioned_weights(tmp_path_factory, codec, zero=False)


@pytest.fixture(scope="module")
def photo(kodak_image) -> np.ndarray:
    return np.ascontiguousarray(kodak_image[100:196, 200:344])


def test_each_cell_reads_the_semantic_cell_under_its_centre():
    latent = torch.arange(12.0).reshape(1, 1, 3, 4)  # 3 x 4 cells over a 90 x 100 photo
    grid = on_latent_grid(latent, (90, 100), (8, 8), 16)  # the pixel latent, padding included
    for row in range(8):
        for col in range(8):
            r = min(2, (row * 16 + 8) * 3 // 90)
            c = min(3, (col * 16 + 8) * 4 // 100)
            assert grid[0, 0, row, col] == latent[0, 0, r, c]


def test_default_files_code_their_pixels_with_the_model_that_reads_the_layer(conditioned_weights, codec, photo):
    conditioned = Codec(conditioned_weights)
    result = conditioned.encode(photo, 1)
    header = bitstream.unpack(result.data)
    assert header.model_id == CONDITIONED and header.find(bitstream.SEMANTIC_CHUNK) is not None
    base = codec.encode(photo, 1)
    assert not np.array_equal(result.symbols.y, base.symbols.y)  # the condition moved the means
    decoded = conditioned.decode_symbols(result.data)
    assert np.array_equal(decoded.symbols.y, result.symbols.y)
    two = decode_outputs_with_threads(conditioned, result.data, 2)
    one = decode_outputs_with_threads(conditioned, result.data, 1)
    assert two.hashes["symbols_sha256"] == one.hashes["symbols_sha256"]
    assert np.array_equal(conditioned.decode_tokens(result.data).tokens, codec.decode_tokens(base.data).tokens)


def test_pixel_only_files_keep_the_pixel_model(conditioned_weights, codec, photo):
    data = Codec(conditioned_weights).encode(photo, 2, token_space="none").data
    assert data == codec.encode(photo, 2, token_space="none").data


def test_a_pruned_semantic_layer_conditions_the_pixels_on_what_its_decoder_has(conditioned_weights, photo):
    conditioned = Codec(conditioned_weights)
    result = conditioned.encode(photo, 1, keep_tokens=4)
    assert bitstream.unpack(result.data).model_id == CONDITIONED
    assert np.array_equal(conditioned.decode_symbols(result.data).symbols.y, result.symbols.y)


def test_a_zero_started_refiner_codes_exactly_as_its_base(tmp_path_factory, codec, photo):
    fresh = Codec(_conditioned_weights(tmp_path_factory, codec, zero=True))
    assert np.array_equal(fresh.encode(photo, 3).symbols.y, codec.encode(photo, 3).symbols.y)


def test_a_file_without_the_layer_the_model_reads_is_refused(conditioned_weights, photo):
    conditioned = Codec(conditioned_weights)
    header = bitstream.unpack(conditioned.encode(photo, 1).data)
    chunks = tuple(c for c in header.chunks if c.tag != bitstream.SEMANTIC_CHUNK)
    stripped = bitstream.pack(dataclasses.replace(header, chunks=chunks))
    with pytest.raises(BitstreamError, match="reads a semantic layer the file lacks"):
        conditioned.decode(stripped)


def test_the_registry_refuses_a_conditioned_model_with_another_quality_table(conditioned_weights, tmp_path):
    raw = json.loads((conditioned_weights / REGISTRY_FILE).read_text())
    raw["models"][CONDITIONED]["qualities"]["1"]["gain_index"] = 3
    (tmp_path / REGISTRY_FILE).write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match="quality table"):
        load_registry(tmp_path)


def test_train_semantic_condition_writes_a_model_the_codec_installs(tmp_path, kodak_image):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.ascontiguousarray(kodak_image[:320, 64 * i : 64 * i + 320])).save(photos / f"p{i}.png")
    out = tmp_path / "run"
    args = ["train-semantic-condition", "--data", str(photos), "--out", str(out), "--steps", "2", "--batch", "2"]
    args += ["--base", "vit-hp-192"]
    result = CliRunner().invoke(main, [*args, "--hidden", "8", "--model-name", "vit-hp-192.tiny-s"])
    assert result.exit_code == 0, result.output
    entry = load_registry(out).model("vit-hp-192.tiny-s")
    assert entry.info["steps"] == 2 and entry.semantic_condition.base == "vit-hp-192"
    (tmp_path / "weights").mkdir()
    root = _packaged_copy(tmp_path / "weights")
    register_conditioned(out, "vit-hp-192.tiny-s", root)
    assert load_registry(root).encoder_conditioned == {"vit-hp-192": "vit-hp-192.tiny-s"}


def test_shipping_a_conditioned_model_writes_its_set_and_refuses_its_id_again(tmp_path, codec, kodak_image):
    from PIL import Image

    from semcodec.codec.conformance import MANIFEST
    from tools.release import ReleasePaths, ship_conditioned

    registry = codec.registry
    base = registry.quality(1).model
    layer = registry.semantic_layer_for(registry.default_token_space)
    channels = codec.semantic_coder(layer.name).layer.config.latent_channels
    run = tmp_path / "run"
    save_conditioned(
        run, grown_with_refiner(codec.model(base)[0], channels, 8), "vit-hp-192.s-rel", registry.model(base), layer, {}
    )
    (tmp_path / "weights").mkdir()
    kodak = tmp_path / "kodak"
    kodak.mkdir()
    for name in ("kodim23.png", "kodim05.png"):
        Image.fromarray(kodak_image).save(kodak / name)
    (tmp_path / "__init__.py").write_text('__version__ = "3.2.0"\n')
    paths = ReleasePaths(
        _packaged_copy(tmp_path / "weights"),
        tmp_path / "__init__.py",
        tmp_path / "CHANGELOG.md",
        tmp_path / "sets",
        kodak,
    )
    assert ship_conditioned(run, "vit-hp-192.s-rel", "", paths) == "3.3.0"
    shipped = load_registry(paths.weights)
    assert shipped.model("vit-hp-192.s-rel").release == "3.3.0"
    assert shipped.encoder_conditioned == {base: "vit-hp-192.s-rel"}
    manifest = json.loads((paths.conformance / "vit-hp-192.s-rel" / MANIFEST).read_text())
    assert {r["quality"] for r in manifest["streams"]} == set(registry.model(base).qualities)
    with pytest.raises(SystemExit, match="released before"):
        ship_conditioned(run, "vit-hp-192.s-rel", "", paths)


def test_a_refining_encoder_steers_the_latent_through_the_conditioned_rate(conditioned_weights, photo):
    conditioned = Codec(conditioned_weights)
    result = conditioned.encode(photo, 1, effort=1)
    assert result.refined_steps > 0 and bitstream.unpack(result.data).model_id == CONDITIONED
    assert np.array_equal(conditioned.decode_symbols(result.data).symbols.y, result.symbols.y)


def test_version_says_which_files_a_conditioned_model_encodes(conditioned_weights):
    from semcodec.cli.app import _version_text

    text = _version_text(conditioned_weights)
    layer = load_registry(conditioned_weights).model(CONDITIONED).semantic_condition.layer
    assert f"model {CONDITIONED} (unreleased checkpoint" in text and f"encodes q1-4 of files with {layer})" in text
