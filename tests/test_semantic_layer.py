"""The semantic layer: a tower's map coded at the encoder, read first by a tokens decoder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from semcodec import bitstream
from semcodec.cli.main import main
from semcodec.codec import Codec
from semcodec.codec.semantic_layer import SemanticLayerCoder
from semcodec.errors import BitstreamError, WeightsError
from semcodec.models.semantic_layer import SemanticLayer, SemanticLayerConfig
from semcodec.training.semantic_layer import TINY_ARCH, register, save_checkpoint
from semcodec.weights import REGISTRY_FILE, WEIGHTS_DIR

TOWER = "efficientnet-lite0"


def _tiny_layer(seed: int = 0) -> SemanticLayer:
    torch.manual_seed(seed)
    return SemanticLayer(SemanticLayerConfig(**TINY_ARCH))


@pytest.fixture(scope="module")
def semantic_weights(tmp_path_factory, codec) -> Path:
    """The packaged weights plus an untrained tiny semantic layer for efficientnet-lite0."""
    root = tmp_path_factory.mktemp("semantic-weights")
    raw = json.loads((WEIGHTS_DIR / REGISTRY_FILE).read_text())
    raw.pop("semantic_layers", None)
    raw.pop("encoder_semantic_layers", None)
    raw.pop("default_token_space", None)  # files carry the layer only when asked: both kinds tested
    (root / REGISTRY_FILE).write_text(json.dumps(raw))
    for entry in raw["models"].values():
        for file in [entry["file"], *(h["file"] for h in entry.get("token_heads", {}).values())]:
            (root / file).symlink_to(WEIGHTS_DIR / file)
    tower = codec.tower(TOWER)
    info = {"tower": TOWER, "tower_sha256": tower.source_sha256, "split_block": 7}
    run = tmp_path_factory.mktemp("semantic-run")
    save_checkpoint(_tiny_layer(), run, "sl-run", 0, info)
    register(run, "sl-run", "sl-tiny", root)
    return root


def test_coder_round_trip_is_the_models_own_hard_rounding():
    from semcodec.codec.hyperprior import entropy_parameters, z_symbols

    layer = _tiny_layer()
    layer.update(force=True)
    coder = SemanticLayerCoder(layer, "sl-tiny", b"\0" * 8)
    features = torch.randn(1, 80, 14, 14) * 2
    payload = bitstream.unpack_semantic(coder.encode(features, 1), bitstream.FORMAT_VERSION)
    assert payload.layer_id == "sl-tiny" and payload.gain_index == 1 and payload.map_grid == (14, 14)
    decoded = coder.decode(payload)
    with torch.no_grad():
        y = layer.analysis(features, 1)
        hyper = coder.hyper(z_symbols(layer.h_a(y), coder.tables), (7, 7))
        means, _ = entropy_parameters(coder.tables, *hyper)  # the exact integer path
        assert torch.equal(decoded, layer.synthesis(torch.round(y - means) + means, 1))
        medians = layer.z_medians()  # the float path it approximates (means within 2^-10)
        float_means, _ = layer.hyper_synthesis(torch.round(layer.h_a(y) - medians) + medians)
        assert (float_means - means).abs().max() < 2**-10


def _context_layer(seed: int = 0) -> SemanticLayer:
    """A tiny layer with a channel and checkerboard context whose nets do something (not the identity)."""
    torch.manual_seed(seed)
    layer = SemanticLayer(SemanticLayerConfig(**TINY_ARCH, context_slice_channels=4, context_spatial=True))
    with torch.no_grad():
        for net in [*layer.context.nets, *layer.context.spatial.nets]:
            net[-1].weight.normal_(0, 0.05)
    layer.update(force=True)
    return layer


def test_a_layer_with_a_context_decodes_its_symbols_and_the_float_paths_rounding():
    layer = _context_layer()
    assert layer.schedule.checkerboard and len(layer.slices) == 2
    coder = SemanticLayerCoder(layer, "sl-ctx", b"\0" * 8)
    features = torch.randn(1, 80, 14, 22) * 2
    payload = bitstream.unpack_semantic(coder.encode(features, 2), bitstream.FORMAT_VERSION)
    decoded = coder.decode(payload)  # the CRC of the symbols passed: the decoder walked the encoder's parameters
    with torch.no_grad():
        y = layer.analysis(features, 2)
        medians = layer.z_medians()
        means, scales = layer.hyper_synthesis(torch.round(layer.h_a(y) - medians) + medians, (7, 11))
        float_map = layer.synthesis(layer.quantize_latent(y, means, scales), 2, (14, 22))
    close = (decoded - float_map).abs() < 1e-3  # the integer walk rounds as the float one, bar rare ties
    assert close.float().mean() > 0.99
    identity = _context_layer()
    for net in [*identity.context.nets, *identity.context.spatial.nets]:
        torch.nn.init.zeros_(net[-1].weight)
    plain = SemanticLayerCoder(identity, "sl-ctx", b"\0" * 8)  # its integer twins: of the zeroed nets
    assert bitstream.unpack_semantic(plain.encode(features, 2), bitstream.FORMAT_VERSION).y != payload.y


def test_a_pruned_layer_with_a_context_is_fitted_through_the_decoders_means():
    """The kept-token fit models the decoder with the layer's float pass along its schedule: the
    uncoded positions hold the context's means, not the hyperprior's (what the fit assumed before)."""
    from semcodec.codec.hyperprior import z_symbols
    from semcodec.codec.semantic_layer import coded_positions

    layer = _context_layer()
    coder = SemanticLayerCoder(layer, "sl-ctx", b"\0" * 8)
    features, kept = torch.randn(1, 80, 14, 22) * 2, (3, 17, 40, 60)
    data = coder.encode(features, 0, kept, 1)
    decoded = coder.decode(bitstream.unpack_semantic(data, bitstream.FORMAT_VERSION))
    with torch.no_grad():
        y = layer.analysis(features, 0)
        means_fixed, scales_fixed = coder.hyper(z_symbols(layer.h_a(y), coder.tables), (7, 11))
        means, scales = means_fixed / coder.tables.one, scales_fixed / coder.tables.one
        where = torch.from_numpy(coded_positions((7, 11), kept, 1)).reshape(1, 1, 7, 11)
        modelled, _ = layer.code_latent(y, means, scales, rate="rounded", keep=where)
        hyperprior_only = torch.where(where, torch.round(y - means) + means, means)
    assert ((layer.synthesis(modelled, 0, (14, 22)) - decoded).abs() < 1e-3).float().mean() > 0.99
    assert not torch.allclose(layer.synthesis(hyperprior_only, 0, (14, 22)), decoded, atol=1e-3)


def test_a_layer_grown_with_a_context_starts_out_coding_as_before():
    from semcodec.training.semantic_layer import grown

    layer = _tiny_layer()
    bigger = grown(layer, {"context_slice_channels": 4, "context_spatial": True})
    assert bigger.context is not None
    features = torch.randn(2, 80, 14, 14)
    with torch.no_grad():  # eval: rounded likelihoods (training's noise is drawn per slice)
        before = layer.eval()(features, torch.tensor([0, 3]))
        after = bigger.eval()(features, torch.tensor([0, 3]))
    assert torch.equal(before["features"], after["features"])
    assert torch.equal(before["likelihoods"]["y"], after["likelihoods"]["y"])
    with pytest.raises(WeightsError, match="more than a context"):
        grown(layer, {"latent_channels": 16})


def test_the_first_accepted_gain_is_judged_on_exactly_the_decoders_map():
    layer = _tiny_layer()
    layer.update(force=True)
    coder = SemanticLayerCoder(layer, "sl-tiny", b"\0" * 8)
    features = torch.randn(1, 80, 14, 22) * 2
    seen: list[torch.Tensor] = []

    def refuse(rebuilt: torch.Tensor) -> bool:
        seen.append(rebuilt)
        return False

    assert coder.first_gain(features, (0, 2, 3), refuse, (14, 22)) == 3  # none taken: the last, never tried
    assert len(seen) == 2
    for gain, rebuilt in zip((0, 2), seen, strict=True):
        payload = bitstream.unpack_semantic(coder.encode(features, gain), bitstream.FORMAT_VERSION)
        assert torch.equal(rebuilt, coder.decode(payload))
    calls = iter([False, True])
    assert coder.first_gain(features, (0, 1, 3), lambda _: next(calls), (14, 22)) == 1


def _weights_with_encoder_gains(semantic_weights: Path, tmp_path: Path, gains: list[int]) -> Path:
    root = tmp_path / "weights"
    shutil.copytree(semantic_weights, root, symlinks=True)
    raw = json.loads((root / REGISTRY_FILE).read_text())
    raw["semantic_layers"]["sl-tiny"]["encoder_gains"] = gains
    (root / REGISTRY_FILE).write_text(json.dumps(raw))
    return root


def test_the_encoder_codes_the_layer_at_the_first_gain_that_keeps_the_towers_answer(
    semantic_weights, kodak_image, tmp_path, monkeypatch
):
    root = _weights_with_encoder_gains(semantic_weights, tmp_path, [0, 1, 3])
    crop = kodak_image[:96, :128]

    def semantic_gain(data: bytes) -> int:
        header = bitstream.unpack(data)
        return bitstream.unpack_semantic(header.chunk(bitstream.SEMANTIC_CHUNK), header.version).gain_index

    answers = iter([True])  # the tower's answer: kept at the first gain tried
    monkeypatch.setattr("semcodec.codec.semantic_stages.keeps_answer", lambda tower, features: lambda _: next(answers))
    assert semantic_gain(Codec(root).encode(crop, 1, token_space=TOWER).data) == 0
    monkeypatch.setattr("semcodec.codec.semantic_stages.keeps_answer", lambda tower, features: lambda _: False)
    assert semantic_gain(Codec(root).encode(crop, 1, token_space=TOWER).data) == 3
    # a pruned file codes the last gain without trying the others; a layer without a list, its one gain
    assert semantic_gain(Codec(root).encode(crop, 1, token_space=TOWER, keep_tokens=4).data) == 3
    assert semantic_gain(Codec(semantic_weights).encode(crop, 1, token_space=TOWER).data) == 0


def test_keeps_answer_compares_the_towers_top_class(codec):
    from semcodec.codec.semantic_tokens import keeps_answer

    tower = codec.tower(TOWER)
    torch.manual_seed(0)
    features = torch.randn(1, 80, 14, 14)
    with torch.no_grad():
        accept = keeps_answer(tower, features)
        assert accept(features.clone())
        others = [torch.randn(1, 80, 14, 14) * 3 for _ in range(8)]
        answer = tower.classify(tower.tail(features)).argmax()
        for other in others:
            assert accept(other) == bool(tower.classify(tower.tail(other)).argmax() == answer)


def test_a_damaged_semantic_chunk_is_refused():
    layer = _tiny_layer()
    layer.update(force=True)
    coder = SemanticLayerCoder(layer, "sl-tiny", b"\0" * 8)
    payload = bitstream.unpack_semantic(coder.encode(torch.randn(1, 80, 14, 14) * 20, 0), bitstream.FORMAT_VERSION)
    coder.decode(payload)
    with pytest.raises(BitstreamError, match="CRC"):
        coder.decode(bitstream.SemanticPayload(**{**payload.__dict__, "crc": payload.crc ^ 1}))
    with pytest.raises(BitstreamError):
        coder.decode(bitstream.SemanticPayload(**{**payload.__dict__, "y": payload.y[:-4]}))
    with pytest.raises(BitstreamError, match="malformed|too short"):
        bitstream.unpack_semantic(b"\x05ab", bitstream.FORMAT_VERSION)


def test_token_space_files_carry_the_semantic_layer_first(semantic_weights, kodak_image):
    codec = Codec(semantic_weights)
    crop = kodak_image[:96, :128]
    data = codec.encode(crop, 1, token_space=TOWER).data
    tags = [c.tag for c in bitstream.unpack(data).chunks]
    assert tags[:2] == [bitstream.SEMANTIC_CHUNK, bitstream.Z_CHUNK] and bitstream.TOKEN_SPACE_CHUNK not in tags
    plain = codec.encode(crop, 1, token_space=TOWER, semantic_layer=False).data
    assert bitstream.SEMANTIC_CHUNK not in [c.tag for c in bitstream.unpack(plain).chunks]
    # the pixels are the pixel layers' alone: the same with and without the semantic layer
    assert np.array_equal(codec.decode(data), codec.decode(plain))

    out = codec.decode_tokens(data)
    assert out.metadata["layers_read"] == "semantic" and out.metadata["semantic_layer"] == "sl-tiny"
    assert tuple(out.tokens.shape) == (63, 1280) and out.metadata["grid"] == "7x9"  # 128 x 96: the tower sees 288 x 224
    header = bitstream.unpack(data, until=bitstream.TOKENS_PREFIX)
    read = header.header_bytes + header.payload_bytes
    assert int(out.metadata["bitstream_bytes_read"]) == read
    assert read < len(data) - len(bitstream.unpack(data).chunk(bitstream.BASE_CHUNK))
    # the prefix alone is enough, and the tokens are the tower's tail on the coded map
    assert torch.equal(codec.decode_tokens(data[:read]).tokens, out.tokens)
    # another token space still reads the base layer
    named = codec.decode_tokens(data, token_space=TOWER)  # asked for by name: the same prefix counted
    assert named.metadata["bitstream_bytes_read"] == out.metadata["bitstream_bytes_read"]
    latent = codec.decode_tokens(data, token_space="semcodec-latent")
    assert latent.metadata["layers_read"] == "base"


def test_files_without_a_semantic_layer_read_the_base_layer(semantic_weights, kodak_image):
    codec = Codec(semantic_weights)
    data = codec.encode(kodak_image[:96, :128], 1, token_space=TOWER, semantic_layer=False).data
    out = codec.decode_tokens(data)
    assert out.metadata["layers_read"] == "base" and out.metadata["token_space"] == TOWER


def test_cli_tokens_decode_reads_the_semantic_prefix(semantic_weights, kodak_image, tmp_path):
    from PIL import Image

    src = tmp_path / "crop.png"
    Image.fromarray(kodak_image[:96, :128]).save(src)
    runner = CliRunner()
    base = ["--weights", str(semantic_weights)]
    smc = tmp_path / "a.smc"
    result = runner.invoke(main, [*base, "encode", str(src), str(smc), "-q", "2", "--token-space", TOWER])
    assert result.exit_code == 0, result.output
    tokens = tmp_path / "a.safetensors"
    result = runner.invoke(main, [*base, "decode", str(smc), "--target", "tokens", "-o", str(tokens)])
    assert result.exit_code == 0, result.output
    from safetensors import safe_open

    with safe_open(str(tokens), "np") as f:
        assert f.metadata()["layers_read"] == "semantic" and f.get_tensor("tokens").shape == (63, 1280)
    info = runner.invoke(main, [*base, "info", str(smc)])
    assert "chunk SEM" in info.output and "semantic:    layer sl-tiny" in info.output
    plain = tmp_path / "b.smc"
    args = [*base, "encode", str(src), str(plain), "-q", "2", "--token-space", TOWER, "--no-semantic-layer"]
    assert runner.invoke(main, args).exit_code == 0
    assert plain.stat().st_size < smc.stat().st_size


def test_a_file_naming_an_unknown_semantic_layer_is_one_clear_error(semantic_weights, kodak_image, tmp_path):
    codec = Codec(semantic_weights)
    data = codec.encode(kodak_image[:96, :128], 1, token_space=TOWER).data
    header = bitstream.unpack(data)
    chunks = []
    for c in header.chunks:
        if c.tag == bitstream.SEMANTIC_CHUNK:
            p = bitstream.unpack_semantic(c.payload, header.version)
            renamed = bitstream.SemanticPayload(**{**p.__dict__, "layer_id": "sl-future"})
            c = bitstream.Chunk(c.tag, bitstream.pack_semantic(renamed, header.version))
        chunks.append(c)
    import dataclasses

    other = bitstream.pack(dataclasses.replace(header, chunks=tuple(chunks)))
    with pytest.raises(BitstreamError, match="sl-future"):
        codec.decode_tokens(other)
    # pixels do not need it
    assert codec.decode(other).shape == (96, 128, 3)


def test_register_refuses_other_weights_under_an_existing_id(semantic_weights, codec, tmp_path):
    tower = codec.tower(TOWER)
    info = {"tower": TOWER, "tower_sha256": tower.source_sha256, "split_block": 7}
    save_checkpoint(_tiny_layer(seed=1), tmp_path / "run", "sl-other", 0, info)
    copy = tmp_path / "w"
    shutil.copytree(semantic_weights, copy, symlinks=True)
    with pytest.raises(WeightsError, match="new id"):
        register(tmp_path / "run", "sl-other", "sl-tiny", copy)


def test_train_semantic_layer_cli_writes_a_resumable_checkpoint(tmp_path):
    from PIL import Image

    from semcodec.training.semantic_layer import load_checkpoint
    from tests.conftest import synthetic_image

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_image(240, 260, seed=i)).save(data / f"img{i}.png")
    out = tmp_path / "run"
    args = ["train-semantic-layer", "--data", str(data), "--out", str(out), "--tiny", "--batch", "2"]
    args += ["--crops-per-image", "1", "--save-every", "2", "--cache", str(tmp_path / "maps.pt")]
    result = CliRunner().invoke(main, [*args, "--steps", "2"])
    assert result.exit_code == 0, result.output
    layer, steps, info = load_checkpoint(out, f"sem-{TOWER}")  # the folder convention of train and distill
    assert steps == 2 and info["tower"] == TOWER and "held_out" in info
    assert sorted(p.name for p in out.iterdir()) == ["registry.json", f"sem-{TOWER}.safetensors"]
    result = CliRunner().invoke(main, [*args, "--steps", "3", "--token-weight", "2"])
    assert result.exit_code == 0, result.output
    _, steps, info = load_checkpoint(out, f"sem-{TOWER}")
    assert steps == 3 and (tmp_path / "maps.pt").exists()
    assert info["token_weight"] == 2.0 and "q1_token_error" in info["held_out"]
    kept, _ = torch.load(tmp_path / "maps.pt")
    assert kept["tokens"].shape[:1] == kept["maps"].shape[:1]  # the token term's tail ran once, kept for the next run


def test_the_token_term_adds_the_tails_relative_token_error(codec):
    from semcodec.training.semantic_layer import layer_losses

    tower = codec.tower(TOWER)
    torch.manual_seed(0)
    maps = torch.randn(2, 80, 14, 14)
    layer = _tiny_layer().eval()  # rounding, not noise: both passes see the same map
    with torch.no_grad():
        targets = tower.tail(maps)
        teacher = tower.classify(targets)
        quality, lambdas = torch.tensor([1, 1]), torch.tensor([2.0, 3.0])
        plain = layer_losses(layer, tower, maps, teacher, quality, lambdas, 0.0, True, 0.0, targets)
        weighted = layer_losses(layer, tower, maps, teacher, quality, lambdas, 0.0, True, 2.0, targets)
        rebuilt = tower.tail(layer(maps, quality)["features"])
    expected = ((rebuilt - targets).pow(2).mean((1, 2)) / targets.pow(2).mean((1, 2))).mean()
    assert weighted["token_error"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert (weighted["loss"] - plain["loss"]).item() == pytest.approx(3.0 * 2.0 * expected.item(), rel=1e-4)


def test_train_semantic_layer_starts_from_a_released_layer(semantic_weights, tmp_path, monkeypatch):
    from PIL import Image

    from semcodec.training.semantic_layer import SemanticLayerTraining, load_checkpoint, run
    from tests.conftest import synthetic_image

    monkeypatch.setenv("SEMCODEC_WEIGHTS", str(semantic_weights))
    released, _, _ = load_checkpoint(semantic_weights, "sl-tiny")
    codec = Codec(semantic_weights)
    photos = [tmp_path / f"img{i}.png" for i in range(2)]
    for i, path in enumerate(photos):
        Image.fromarray(synthetic_image(240, 260, seed=i)).save(path)
    cfg = SemanticLayerTraining(
        TOWER, photos, tmp_path / "run", layer_id="sl-next", init_from="sl-tiny", steps=0, crops_per_image=1
    )
    run(cfg, codec.tower(TOWER))
    layer, steps, _ = load_checkpoint(tmp_path / "run", "sl-next")
    assert steps == 0
    for name, value in released.state_dict().items():
        assert torch.equal(layer.state_dict()[name], value), name


def test_an_encoder_pruned_layer_codes_only_the_kept_tokens(semantic_weights, kodak_image):
    codec = Codec(semantic_weights)
    crop = kodak_image[:96, :128]
    whole = codec.encode(crop, 1, token_space=TOWER).data
    pruned = codec.encode(crop, 1, token_space=TOWER, keep_tokens=6).data
    all_tokens, out = codec.decode_tokens(whole), codec.decode_tokens(pruned)
    assert tuple(out.tokens.shape) == (6, 1280) and out.metadata["kept_tokens"] == "6"
    assert out.positions is not None and len(set(out.positions.tolist())) == 6 and int(out.positions.max()) < 63
    assert int(out.metadata["bitstream_bytes_read"]) < int(all_tokens.metadata["bitstream_bytes_read"])
    header = bitstream.unpack(pruned)
    chunk = bitstream.unpack_semantic(header.chunk(bitstream.SEMANTIC_CHUNK), header.version)
    assert chunk.kept == tuple(out.positions.tolist()) and chunk.token_grid == (7, 9)
    # the pixel layers stay whole: the same pixels as the unpruned file's
    assert np.array_equal(codec.decode(pruned), codec.decode(whole))


def test_a_pruned_layer_keeps_the_tokens_with_the_most_class_evidence():
    from semcodec.codec.semantic_tokens import kept_tokens, token_importance

    tokens = torch.zeros(5, 3)
    tokens[3, 0], tokens[1, 0], tokens[4, 1] = 4.0, 2.0, 9.0  # 4 is the largest, but for another class
    classifier = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.1, 0.0]]))
    assert kept_tokens(token_importance(tokens, classifier), 2) == (1, 3)
    assert kept_tokens(token_importance(tokens, None), 2) == (3, 4)  # no classifier: the largest


def test_too_many_kept_tokens_is_one_clear_error(semantic_weights, kodak_image):
    from semcodec.errors import InputError

    with pytest.raises(InputError, match="1..63 tokens"):
        Codec(semantic_weights).encode(kodak_image[:96, :128], 1, token_space=TOWER, keep_tokens=64)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((224, 224), (224, 224)), ((512, 768), (224, 352)), ((768, 512), (352, 224)), ((100, 1000), (224, 448))],
)
def test_the_tower_sees_the_photo_at_its_shape(size, expected):
    from semcodec.codec.semantic_tokens import tower_geometry

    assert tower_geometry(*size, short=224, multiple=32) == expected


def test_coded_positions_reach_the_kept_tokens_neighbours():
    from semcodec.codec.semantic_layer import coded_positions

    assert coded_positions((3, 4), None, 1) is None
    assert coded_positions((3, 4), (5,), 0).reshape(3, 4).tolist() == [
        [False, False, False, False], [False, True, False, False], [False, False, False, False]
    ]  # fmt: skip
    assert coded_positions((3, 4), (0,), 1).reshape(3, 4).tolist() == [
        [True, True, False, False], [True, True, False, False], [False, False, False, False]
    ]  # fmt: skip


def test_format_3_semantic_chunks_parse_as_they_were_written():
    payload = bitstream.SemanticPayload("sl", b"\1" * 8, 2, 7, b"zz", b"yyy")
    old = bitstream.pack_semantic(payload, 3)
    assert bitstream.unpack_semantic(old, 3) == payload
    assert len(bitstream.pack_semantic(payload, 4)) == len(old) + 4  # grid, reach, pruned flag
    pruned = bitstream.SemanticPayload("sl", b"\1" * 8, 2, 7, b"zz", b"yyy", (14, 21), (0, 9, 76), 1)
    assert bitstream.unpack_semantic(bitstream.pack_semantic(pruned, 4), 4) == pruned
    with pytest.raises(ValueError, match="format version 3"):
        bitstream.pack_semantic(pruned, 3)
    damaged = bytearray(bitstream.pack_semantic(pruned, 4))
    damaged[len(damaged) - 6] = 0xFF  # the kept-token bitmap's last byte (before z, y): tokens past the grid
    with pytest.raises(BitstreamError, match="malformed"):
        bitstream.unpack_semantic(bytes(damaged), 4)


def test_format_6_semantic_chunks_hold_one_stream_and_no_z_length():
    """Format 6 codes z and y in one range-coded stream: the chunk loses z's length (4 bytes); a
    payload coded the other way is refused rather than written in the wrong layout."""
    apart = bitstream.SemanticPayload("sl", b"\1" * 8, 2, 7, b"zz", b"yyy", (14, 21), (0, 9, 76), 1)
    joint = dataclasses.replace(apart, z=b"", y=b"zzyyy", joint=True)
    lean = bitstream.pack_semantic(joint, 6)
    assert len(lean) == len(bitstream.pack_semantic(apart, 5)) - 4
    assert bitstream.unpack_semantic(lean, 6) == joint
    for payload, version in ((apart, 6), (joint, 5)):
        with pytest.raises(ValueError, match=f"format version {version} codes z and y"):
            bitstream.pack_semantic(payload, version)


def test_a_format_6_layer_decodes_from_its_one_stream_and_a_format_5_one_still_does():
    layer = _tiny_layer()
    layer.update(force=True)
    coder = SemanticLayerCoder(layer, "sl-tiny", b"\0" * 8)
    features = torch.randn(1, 80, 14, 14) * 20
    maps = {}
    for version in (5, 6):
        payload = bitstream.unpack_semantic(coder.encode(features, 1, version=version), version)
        assert payload.joint == (version == 6) and (payload.z == b"") == (version == 6)
        maps[version] = coder.decode(payload)
    assert torch.equal(maps[5], maps[6])  # the same symbols, coded in one stream or two


def test_the_accepted_trial_is_the_file_coded_at_that_gain():
    layer = _tiny_layer()
    layer.update(force=True)
    coder = SemanticLayerCoder(layer, "sl-tiny", b"\0" * 8)
    features = torch.randn(1, 80, 14, 22) * 2
    calls = iter([False, True])
    data, latent = coder.encode_first_accepted(features, (0, 1, 3), lambda _: next(calls))
    direct, direct_latent = coder.encode_latent(features, 1)
    assert data == direct and torch.equal(latent, direct_latent)
    assert coder.encode_first_accepted(features, (0, 3), lambda _: False)[0] == coder.encode(features, 3)
