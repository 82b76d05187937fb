"""Batch coding: failures recorded not fatal, resumable after a kill, round trip, Ray engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semcodec.cli.main import main
from tests.conftest import synthetic_image


def make_dataset(root: Path, good: int = 3, size: tuple[int, int] = (40, 56)) -> Path:
    (root / "nested" / "deeper").mkdir(parents=True)
    for i in range(good):
        folder = root if i % 2 == 0 else root / "nested" / "deeper"
        Image.fromarray(synthetic_image(*size, seed=i)).save(folder / f"img{i:03d}.png")
    (root / "nested" / "notes.png").write_text("not an image")
    png = (root / "img000.png").read_bytes()
    (root / "nested" / "truncated.png").write_bytes(png[: len(png) // 3])
    return root


def manifest(dst: Path) -> dict[str, dict]:
    entries = {}
    for line in (dst / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        entry.pop("seconds")
        entry.pop("worker_peak_rss_mb")
        entries[entry["source"]] = entry
    return entries


def run(*args: str, weights: Path) -> object:
    return CliRunner().invoke(main, ["--weights", str(weights), *args])


def test_batch_records_failures_and_goes_on(tmp_path, tiny_weights):
    src = make_dataset(tmp_path / "src")
    dst = tmp_path / "dst"
    result = run("batch", "encode", str(src), str(dst), "-q", "1", weights=tiny_weights)
    assert result.exit_code == 1  # something failed: non-zero, but only at the end
    entries = manifest(dst)
    ok = {Path(s).name for s, e in entries.items() if e["status"] == "ok"}
    failed = {Path(s).name: e["error"] for s, e in entries.items() if e["status"] == "failed"}
    assert ok == {"img000.png", "img001.png", "img002.png"}
    assert set(failed) == {"notes.png", "truncated.png"} and all(failed.values())
    assert (dst / "nested" / "deeper" / "img001.png.smc").exists()  # relative paths mirrored
    assert "2 failed" in result.stderr and "mean" in result.stderr
    failure_lines = [line for line in result.stderr.splitlines() if line.startswith("semcodec: failed:")]
    assert len(failure_lines) == 2
    for line in failure_lines:
        source = next(str(p) for p in src.rglob("*.png") if str(p) in line)
        assert line.count(source) == 1, line  # the path once
    assert not list(dst.rglob("*.part"))
    again = run("batch", "encode", str(src), str(dst), "-q", "1", weights=tiny_weights)
    assert "encoded 0 files (3 already done, 2 failed)" in again.stderr


def test_changed_or_missing_outputs_are_redone(tmp_path, tiny_weights):
    src = make_dataset(tmp_path / "src", good=2)
    dst = tmp_path / "dst"
    run("batch", "encode", str(src), str(dst), weights=tiny_weights)
    (dst / "img000.png.smc").unlink()
    Image.fromarray(synthetic_image(40, 56, seed=99)).save(src / "nested" / "deeper" / "img001.png")
    result = run("batch", "encode", str(src), str(dst), weights=tiny_weights)
    assert "encoded 2 files (0 already done" in result.stderr


def test_changed_settings_or_weights_are_recoded(tmp_path, tiny_weights):
    """An output made with another quality or other weights is not what the rerun asked for."""
    import shutil

    src = make_dataset(tmp_path / "src", good=2)
    dst = tmp_path / "dst"
    assert run("batch", "encode", str(src), str(dst), "-q", "1", weights=tiny_weights).exit_code == 1
    first = (dst / "img000.png.smc").read_bytes()
    same = run("batch", "encode", str(src), str(dst), "-q", "1", weights=tiny_weights)
    assert "encoded 0 files (2 already done, 2 failed)" in same.stderr
    other = run("batch", "encode", str(src), str(dst), "-q", "2", weights=tiny_weights)
    assert "encoded 2 files (0 already done, 2 failed, 2 recoded for changed settings)" in other.stderr
    assert (dst / "img000.png.smc").read_bytes() != first
    assert all(e["settings"]["quality"] == 2 for e in manifest(dst).values())
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_weights, retrained)
    registry = retrained / "registry.json"
    registry.write_text(registry.read_text().replace('"default_quality"', '"default_quality" ', 1))
    again = run("batch", "encode", str(src), str(dst), "-q", "2", weights=retrained)
    assert "2 recoded for changed settings" in again.stderr


def test_batch_decode_round_trips(tmp_path, tiny_weights):
    src = make_dataset(tmp_path / "src")
    run("batch", "encode", str(src), str(tmp_path / "bits"), weights=tiny_weights)
    result = run("batch", "decode", str(tmp_path / "bits"), str(tmp_path / "px"), weights=tiny_weights)
    assert result.exit_code == 0, result.stderr
    for name in ("img000.png", "nested/deeper/img001.png", "img002.png"):
        with Image.open(tmp_path / "px" / name) as decoded, Image.open(src / name) as original:
            assert decoded.size == original.size
    tokens = run(
        "batch", "decode", str(tmp_path / "bits"), str(tmp_path / "tok"), "--target", "tokens", weights=tiny_weights
    )
    assert tokens.exit_code == 0 and (tmp_path / "tok" / "img000.safetensors").exists()
    single = tmp_path / "single.safetensors"
    args = ["decode", str(tmp_path / "bits" / "img000.png.smc"), "--target", "tokens", "-o", str(single)]
    assert run(*args, weights=tiny_weights).exit_code == 0
    from safetensors.numpy import load_file

    batch_tokens, cli_tokens = load_file(tmp_path / "tok" / "img000.safetensors"), load_file(single)
    assert batch_tokens["tokens"].dtype == cli_tokens["tokens"].dtype  # one default dtype
    assert np.array_equal(batch_tokens["tokens"], cli_tokens["tokens"])
    half = run(
        "batch",
        "decode",
        str(tmp_path / "bits"),
        str(tmp_path / "half"),
        "--target",
        "tokens",
        "--dtype",
        "fp16",
        weights=tiny_weights,
    )
    assert half.exit_code == 0
    assert (tmp_path / "half" / "img000.safetensors").stat().st_size < single.stat().st_size


def test_glob_and_list_sources(tmp_path, tiny_weights):
    src = make_dataset(tmp_path / "src")
    listing = tmp_path / "src" / "list.txt"
    listing.write_text("img000.png\nnested/deeper/img001.png\n")
    assert run("batch", "encode", str(listing), str(tmp_path / "a"), weights=tiny_weights).exit_code == 0
    assert sorted(manifest(tmp_path / "a")) == sorted(str(src / p) for p in ("img000.png", "nested/deeper/img001.png"))
    assert run("batch", "encode", str(src / "img00[02].png"), str(tmp_path / "b"), weights=tiny_weights).exit_code == 0
    assert len(manifest(tmp_path / "b")) == 2


def test_killed_run_resumes_to_the_same_manifest(tmp_path, tiny_weights):
    """SIGKILL mid-run, rerun: same manifest and outputs as an uninterrupted run, no partial files
    (the tiny model: what is tested is the manifest and the outputs, not the codec)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(48):
        Image.fromarray(synthetic_image(192, 256, seed=i)).save(src / f"{i:02d}.png")
    command = [sys.executable, "-m", "semcodec.cli", "--weights", str(tiny_weights), "batch", "encode", str(src)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, str(tmp_path / "full")], check=True, capture_output=True, env=env)
    dst = tmp_path / "killed"
    proc = subprocess.Popen([*command, str(dst)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 600  # a wait for progress, not a timing test: a loaded machine needs minutes
    while time.time() < deadline and proc.poll() is None:
        lines = (dst / "manifest.jsonl").read_text().count("\n") if (dst / "manifest.jsonl").exists() else 0
        if lines >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    interrupted = len(manifest(dst))
    subprocess.run([*command, str(dst)], check=True, capture_output=True, env=env)
    assert interrupted < 48, "the run finished before it could be killed; nothing was tested"
    assert manifest(dst) == manifest(tmp_path / "full")
    assert not list(dst.rglob("*.part"))
    for out in (tmp_path / "full").glob("*.smc"):
        assert (dst / out.name).read_bytes() == out.read_bytes()


def test_a_killed_runs_half_written_file_is_cleared_when_its_image_is_redone(tmp_path, tiny_weights):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    Image.fromarray(synthetic_image(64, 96, seed=1)).save(src / "a.png")
    (dst / ".a.png.smc.k1ll3d.part").write_bytes(b"half")  # what SIGKILL mid-write leaves (fileio.write_atomic)
    assert run("batch", "encode", str(src), str(dst), weights=tiny_weights).exit_code == 0
    assert (dst / "a.png.smc").exists() and not list(dst.rglob("*.part"))


def test_ray_that_does_not_start_is_one_clear_line(tmp_path, tiny_weights, monkeypatch):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")

    def overloaded(*args, **kwargs):
        raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", overloaded)
    src = make_dataset(tmp_path / "src", good=2)
    result = run("batch", "encode", str(src), str(tmp_path / "ray"), "--engine", "ray", weights=tiny_weights)
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "Ray did not start (The current node timed out" in result.stderr
    assert not (tmp_path / "ray" / "manifest.jsonl").exists() or not manifest(tmp_path / "ray")
    assert not list(tmp_path.rglob("*.part"))


def test_ray_engine_matches_local(tmp_path, tiny_weights):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    src = make_dataset(tmp_path / "src", good=2)
    local = run("batch", "encode", str(src), str(tmp_path / "local"), weights=tiny_weights)
    remote = run(
        "batch", "encode", str(src), str(tmp_path / "ray"), "--engine", "ray", "--workers", "2", weights=tiny_weights
    )
    assert local.exit_code == remote.exit_code == 1, remote.stderr
    assert manifest(tmp_path / "ray") == manifest(tmp_path / "local")
    for out in (tmp_path / "local").rglob("*.smc"):
        assert (tmp_path / "ray" / out.relative_to(tmp_path / "local")).read_bytes() == out.read_bytes()


def test_parallel_workers_give_identical_files(tmp_path, tiny_weights):
    src = make_dataset(tmp_path / "src", good=4)
    run("batch", "encode", str(src), str(tmp_path / "one"), weights=tiny_weights)
    run("batch", "encode", str(src), str(tmp_path / "two"), "--workers", "2", weights=tiny_weights)
    assert manifest(tmp_path / "one") == manifest(tmp_path / "two")
    outputs = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.smc"))
    assert outputs and all((tmp_path / "one" / p).read_bytes() == (tmp_path / "two" / p).read_bytes() for p in outputs)
    assert np.isfinite([e.get("bpp", 0) for e in manifest(tmp_path / "two").values()]).all()


def test_default_and_explicit_settings_agree_and_a_rerun_has_nothing_to_do(tmp_path, tiny_weights):
    """The manifest stores the effective quality and token space: `-q Q` for the default Q is no change."""
    import json

    src = make_dataset(tmp_path / "src", good=2)
    for bad in src.rglob("*.png"):
        if bad.name in ("notes.png", "truncated.png"):
            bad.unlink()
    dst = tmp_path / "dst"
    assert run("batch", "encode", str(src), str(dst), weights=tiny_weights).exit_code == 0
    registry = json.loads((tiny_weights / "registry.json").read_text())
    default = registry["default_quality"]
    assert {e["settings"]["quality"] for e in manifest(dst).values()} == {default}
    explicit = run("batch", "encode", str(src), str(dst), "-q", str(default), weights=tiny_weights)
    assert explicit.exit_code == 0
    assert explicit.stderr.strip() == "nothing to do: 2 files already encoded with these settings"
    assert "nan" not in explicit.stderr


def test_progress_in_a_log_is_plain_lines_and_decode_bpp_is_the_bitstream_s(tmp_path, tiny_weights):
    src = make_dataset(tmp_path / "src", good=3)
    bits = tmp_path / "bits"
    result = run("batch", "encode", str(src), str(bits), weights=tiny_weights)  # stderr is not a terminal here
    assert "\r" not in result.stderr and "batch: 5/5 done" in result.stderr
    encoded = {Path(s).name: e for s, e in manifest(bits).items() if e["status"] == "ok"}
    run("batch", "decode", str(bits), str(tmp_path / "px"), weights=tiny_weights)
    decoded = {Path(s).name.removesuffix(".smc"): e for s, e in manifest(tmp_path / "px").items()}
    for name, entry in encoded.items():
        assert decoded[name]["bpp"] == pytest.approx(entry["bpp"])  # the file's, not the PNG's
        assert decoded[name]["bytes"] != entry["bytes"]
