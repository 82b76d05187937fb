"""Every file any release wrote decodes in every later release: the conformance sets.

``tests/conformance/<model-id>/`` holds golden streams of each released model (vit-hp-192's were
written by the build that shipped it, commit 44b6c2d, not by today's code) and what they decode to.
Symbols must match bit for bit everywhere; pixels and tokens must match their hashes on the CPU kind
and thread count that recorded them and stay within the conformance bounds anywhere else
(``semcodec.codec.conformance``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from semcodec.codec.conformance import (
    MANIFEST,
    array_sha256,
    decode_outputs,
    load_set,
    pixels_within_bounds,
    symbols_sha256,
    tokens_sha256,
    tokens_within_bounds,
)
from semcodec.weights import load_registry

CONFORMANCE = Path(__file__).parent / "conformance"
SETS = sorted(p.parent for p in CONFORMANCE.glob(f"*/{MANIFEST}"))
STREAMS = [(folder, s["file"]) for folder in SETS for s in json.loads((folder / MANIFEST).read_text())["streams"]]
EXACT = os.environ.get("SEMCODEC_CONFORMANCE_EXACT") == "1"
"""On the machine kind that recorded a set: ask for the pixel and token hashes, not only the bounds."""


def test_every_released_model_has_a_conformance_set():
    """A model that ships without golden files could silently stop decoding in a later release."""
    released = {name for name, entry in load_registry().models.items() if entry.frozen}
    assert released, "the packaged registry lists no released model"
    assert released <= {folder.name for folder in SETS}


def test_every_released_semantic_layer_has_a_conformance_set():
    released = {name for name, entry in load_registry().semantic_layers.items() if entry.release}
    assert released <= {folder.name for folder in SETS}


def test_the_set_of_the_first_release_was_written_by_that_release():
    manifest = json.loads((CONFORMANCE / "vit-hp-192" / MANIFEST).read_text())
    assert "44b6c2d" in manifest["written_by"]
    first = [s for s in manifest["streams"] if "added_by" not in s]  # later format versions add their own
    assert first and all(s.get("earlier_build_decodes_identically") for s in first)
    assert {s["format_version"] for s in first} == {1, 2}


@pytest.mark.parametrize(("folder", "name"), STREAMS, ids=[f"{f.name}/{n}" for f, n in STREAMS])
def test_conformance_stream_decodes_as_recorded(codec, folder: Path, name: str):
    manifest, reference = load_set(folder)
    record = next(s for s in manifest["streams"] if s["file"] == name)
    entry = codec.registry.model(manifest["model"])
    assert entry.sha256 == manifest["weights_sha256"], "a released model's weights changed"
    if "semantic_layer" in manifest:
        layer = codec.registry.semantic_layers[manifest["semantic_layer"]]
        assert layer.sha256 == manifest["semantic_layer_sha256"], "a released semantic layer's weights changed"
    out = decode_outputs(codec, (folder / name).read_bytes())

    assert symbols_sha256(out.symbols) == record["symbols_sha256"]  # bit-exact on every machine
    assert out.token_space == record["token_space"]
    assert out.pixels.shape == (record["size"][1], record["size"][0], 3)
    assert pixels_within_bounds(out.pixels, reference[f"{name}/pixels"]) is None
    assert tokens_within_bounds(out.tokens, reference[f"{name}/tokens"]) is None
    if EXACT:
        assert array_sha256(out.pixels) == record["pixels_sha256"]
        assert tokens_sha256(out.tokens, out.positions) == record["tokens_sha256"]


def test_bounds_catch_a_wrong_decode():
    """The bounded comparison is not vacuous: two levels off, or a token off by 1%, is refused."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert pixels_within_bounds(pixels, pixels) is None
    off_by_two = pixels.copy()
    off_by_two[0, 0, 0] = (int(pixels[0, 0, 0]) + 2) % 256
    assert pixels_within_bounds(off_by_two, pixels) is not None
    tokens = rng.normal(size=(4, 16)).astype(np.float32)
    assert tokens_within_bounds(tokens, tokens.astype(np.float16)) is None
    assert tokens_within_bounds(tokens * 1.01 + 0.05, tokens.astype(np.float16)) is not None


def test_conformance_writer_refuses_an_existing_set(tmp_path):
    """Old sets are never regenerated: the writer stops before touching a folder that exists."""
    spec = importlib.util.spec_from_file_location(
        "write_conformance", CONFORMANCE.parents[1] / "tools" / "write_conformance.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    (tmp_path / "vit-hp-192").mkdir()
    (tmp_path / "vit-hp-192" / "keep.smc").write_bytes(b"old")
    with pytest.raises(SystemExit, match="never regenerated"):
        module.write_set("vit-hp-192", tmp_path, tmp_path, "test")
    assert (tmp_path / "vit-hp-192" / "keep.smc").read_bytes() == b"old"


def test_a_new_format_version_adds_streams_and_keeps_the_old_ones(tmp_path):
    """``--add-format-version`` appends this build's format to a set: the earlier streams, records and
    reference arrays stay byte for byte; asked again, it refuses before any work."""
    import shutil

    from semcodec import bitstream
    from tools.conformance_set import KODAK, add_format_streams, format_cases

    if not KODAK.is_dir():
        pytest.skip("the Kodak images are not in the shared data")
    source = CONFORMANCE / "vit-hp-192"
    manifest, reference = load_set(source)
    earlier = [s for s in manifest["streams"] if s["format_version"] < bitstream.FORMAT_VERSION]
    target = tmp_path / "vit-hp-192"
    target.mkdir()
    for record in earlier:
        shutil.copyfile(source / record["file"], target / record["file"])
    kept = {k: v for k, v in reference.items() if k.split("/")[0] in {s["file"] for s in earlier}}
    np.savez_compressed(target / "reference.npz", **kept)
    (target / MANIFEST).write_text(json.dumps({**manifest, "streams": earlier}))

    add_format_streams("vit-hp-192", tmp_path, KODAK, "test build")
    after, arrays = load_set(target)
    assert after["streams"][: len(earlier)] == earlier
    added = after["streams"][len(earlier) :]
    expected = format_cases(sorted(int(q) for q in {s["quality"] for s in earlier}), bitstream.FORMAT_VERSION)
    assert [s["file"] for s in added] == [f"{c.stream}.smc" for c in expected] and len(added) >= 2
    assert all(s["format_version"] == bitstream.FORMAT_VERSION for s in added)
    assert all(np.array_equal(arrays[k], v) for k, v in kept.items())
    for record in added:
        data = (target / record["file"]).read_bytes()
        assert bitstream.unpack(data).version == bitstream.FORMAT_VERSION and "test build" in record["added_by"]
    with pytest.raises(SystemExit, match="never rewritten"):
        add_format_streams("vit-hp-192", tmp_path, KODAK, "test build")


def _with_header(data: bytes, **changes) -> bytes:
    import dataclasses

    from semcodec import bitstream

    return bitstream.pack(dataclasses.replace(bitstream.unpack(data), **changes))


def test_files_name_what_cannot_decode_them(tmp_path):
    """A file of a model this release lacks, or of weights no release shipped: one line that says
    which release has the model (or that none does), never a traceback."""
    from click.testing import CliRunner

    from semcodec.cli.main import main

    data = (CONFORMANCE / "vit-hp-192" / "kodim23-128x96-q2.smc").read_bytes()
    newer = tmp_path / "newer.smc"
    newer.write_bytes(_with_header(data, model_id="vit-hp-999"))
    dev = tmp_path / "dev.smc"
    dev.write_bytes(_with_header(data, weights_hash=bytes(8)))
    runner = CliRunner()
    result = runner.invoke(main, ["decode", str(newer), "-o", str(tmp_path / "a.png")])
    assert result.exit_code == 1 and "'vit-hp-999'" in result.output and "pip install -U semcodec" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "a.png").exists()
    result = runner.invoke(main, ["decode", str(dev), "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 1 and "which no release shipped" in result.output and "0.2.0" in result.output
    info = runner.invoke(main, ["info", str(newer)])
    assert info.exit_code == 0 and "release:     not installed" in info.output
    info = runner.invoke(main, ["info", str(CONFORMANCE / "vit-hp-192" / "kodim23-128x96-q2.smc")])
    assert "release:     semcodec 0.2.0 (installed)" in info.output
    assert "format:      semcodec v2 (read by semcodec 0.2.0 and later)" in info.output
    from semcodec import bitstream

    assert set(bitstream.FIRST_WRITTEN_BY) == set(bitstream.READABLE_VERSIONS)


def test_a_retired_model_names_the_releases_that_have_it(tmp_path):
    from semcodec.weights import REGISTRY_FILE, WEIGHTS_DIR

    raw = json.loads((WEIGHTS_DIR / REGISTRY_FILE).read_text())
    raw["retired"] = {"vit-hp-old": {"sha256": "00" * 32, "releases": "0.2.0-0.4.1", "last_release": "0.4.1"}}
    (tmp_path / REGISTRY_FILE).write_text(json.dumps(raw))
    message = load_registry(tmp_path).missing_model_message("vit-hp-old")
    assert "0.2.0-0.4.1" in message and "semcodec==0.4.1" in message


def test_version_names_the_release_and_its_models():
    from click.testing import CliRunner

    from semcodec import __version__
    from semcodec.cli.main import main

    out = CliRunner().invoke(main, ["--version"]).output
    assert out.startswith(f"semcodec {__version__}\n")
    for name, entry in load_registry().models.items():
        assert f"model {name} (released in {entry.release}" in out
