"""The command line: every command works, every bad input is one line on stderr, exit 1, no file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import KODAK, synthetic_image


def semcodec(*args: str, stdin: bytes | None = None, env_weights: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in-process (click's runner) and report it like a finished subprocess."""
    from click.testing import CliRunner

    from semcodec.cli.main import main

    env = {"SEMCODEC_WEIGHTS": str(env_weights)} if env_weights is not None else {}
    result = CliRunner().invoke(main, list(args), input=stdin, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout_bytes, result.stderr_bytes)


def semcodec_process(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess (pipes, exit status, no traceback)."""
    return subprocess.run([sys.executable, "-m", "semcodec.cli", *args], input=stdin, capture_output=True)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr.decode()
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semcodec: error:"), lines
    return lines[0]


@pytest.fixture(scope="module")
def small_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "small.png"
    Image.fromarray(synthetic_image(96, 130)).save(path)
    return path


@pytest.fixture(scope="module")
def small_bin(tmp_path_factory, small_png) -> Path:
    out = tmp_path_factory.mktemp("bin") / "small.bin"
    proc = semcodec("encode", str(small_png), str(out), "-q", "2")
    assert proc.returncode == 0, proc.stderr.decode()
    return out


def test_version():
    proc = semcodec_process("--version")
    from semcodec import __version__

    assert proc.returncode == 0 and proc.stdout.startswith(f"semcodec {__version__}\n".encode())
    assert b"model vit-hp-192 (released in 0.2.0, weights 263ecf61cd0852fc" in proc.stdout


def test_real_process_pipes_and_clean_errors(small_png, tmp_path):
    proc = semcodec_process("encode", "-", "-", "-q", "1", stdin=small_png.read_bytes())
    assert proc.returncode == 0 and proc.stdout[:4] == b"SMCD"
    proc = semcodec_process("decode", "-", "-o", str(tmp_path / "x.png"), stdin=proc.stdout[:-7])
    one_error_line(proc)
    assert not (tmp_path / "x.png").exists()


def test_encode_reports_one_line_with_bytes_and_bpp(tmp_path, small_png):
    out = tmp_path / "a.bin"
    proc = semcodec("encode", str(small_png), str(out))
    assert proc.returncode == 0
    line = proc.stderr.decode().strip()
    size = out.stat().st_size
    assert len(line.splitlines()) == 1
    assert f"{size} bytes" in line and f"{size * 8 / (96 * 130):.4f} bpp" in line


def test_decode_pixels_and_tokens(tmp_path, small_bin):
    png = tmp_path / "out.png"
    assert semcodec("decode", str(small_bin), "-o", str(png)).returncode == 0
    assert Image.open(png).size == (130, 96)
    from safetensors import safe_open

    st = tmp_path / "out.safetensors"
    assert semcodec("decode", str(small_bin), "--target", "tokens", "-o", str(st), "--dtype", "fp16").returncode == 0
    with safe_open(st, "pt") as f:
        tokens = f.get_tensor("tokens")
        meta = f.metadata()
    assert tokens.dtype.is_floating_point and str(tokens.dtype) == "torch.float16"
    assert meta["token_count"] == str(tokens.shape[0]) and meta["source_size"] == "130x96"
    assert 0 < int(meta["bitstream_bytes_read"]) < small_bin.stat().st_size  # the base layer only
    npy = tmp_path / "out.npy"
    assert semcodec("decode", str(small_bin), "--target", "tokens", "-o", str(npy)).returncode == 0
    assert np.load(npy).shape == tuple(tokens.shape)


def test_info(small_bin):
    proc = semcodec("info", str(small_bin))
    assert proc.returncode == 0
    text = proc.stdout.decode()
    assert "quality:     2" in text and "image:       130x96" in text
    assert all(f"chunk {tag} " in text for tag in ("SEM", "Z", "YB", "YE"))  # a default file's layers
    assert "chunk TSPC" not in text  # the semantic layer names its tower
    assert "semantic:    layer sem-lite0-b7" in text and "token grid 7x9" in text


def test_stdin_and_stdout(small_png, small_bin):
    proc = semcodec("encode", "-", "-", "-q", "2", stdin=small_png.read_bytes())
    assert proc.returncode == 0
    assert proc.stdout == small_bin.read_bytes()
    proc = semcodec("decode", "-", "-o", "-", stdin=proc.stdout)
    assert proc.returncode == 0 and proc.stdout.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"SMC", "truncated"),
        (b"hello world, not a bitstream", "not a semcodec bitstream"),
    ],
)
def test_bad_bitstreams(tmp_path, content, match):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(content)
    out = tmp_path / "out.png"
    line = one_error_line(semcodec("decode", str(bad), "-o", str(out)))
    assert match in line
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_truncated_and_corrupt_real_files(tmp_path, small_bin):
    data = small_bin.read_bytes()
    for name, content in {
        "trunc.bin": data[: len(data) // 2],
        "flip.bin": data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:],
    }.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        out = tmp_path / (name + ".png")
        one_error_line(semcodec("decode", str(bad), "-o", str(out)))
        assert not out.exists()


def test_missing_file_and_non_image(tmp_path):
    assert "no such file" in one_error_line(semcodec("encode", str(tmp_path / "nope.png"), str(tmp_path / "o.bin")))
    text = tmp_path / "notes.png"
    text.write_text("this is text")
    assert "not an image" in one_error_line(semcodec("encode", str(text), str(tmp_path / "o.bin")))
    assert not (tmp_path / "o.bin").exists()


def test_existing_output_needs_force(tmp_path, small_png):
    out = tmp_path / "keep.bin"
    out.write_bytes(b"precious")
    assert "--force" in one_error_line(semcodec("encode", str(small_png), str(out)))
    assert out.read_bytes() == b"precious"
    assert semcodec("encode", str(small_png), str(out), "--force").returncode == 0
    assert out.read_bytes()[:4] == b"SMCD"


def test_converted_inputs_warn(tmp_path):
    rgba = np.dstack([synthetic_image(40, 50), np.full((40, 50), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(synthetic_image(40, 50)[:, :, 0]).save(tmp_path / "grey.png")
    Image.fromarray(synthetic_image(40, 50)[:, :, 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    for name in ("rgba.png", "grey.png", "deep.png"):
        proc = semcodec("encode", str(tmp_path / name), str(tmp_path / (name + ".bin")))
        assert proc.returncode == 0, proc.stderr.decode()
        assert "semcodec: warning:" in proc.stderr.decode()
        dec = semcodec("decode", str(tmp_path / (name + ".bin")), "-o", str(tmp_path / (name + ".out.png")))
        assert dec.returncode == 0
        assert Image.open(tmp_path / (name + ".out.png")).size == (50, 40)


def test_weights_hash_mismatch_is_a_clear_error(tmp_path, tiny_weights, small_png):
    import hashlib
    import json
    import shutil

    broken = tmp_path / "weights"
    shutil.copytree(tiny_weights, broken)
    registry = json.loads((broken / "registry.json").read_text())
    (entry,) = registry["models"].values()  # the tiny model, the one encode loads
    target = broken / entry["file"]
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    line = one_error_line(semcodec("encode", str(small_png), str(tmp_path / "o.bin"), env_weights=broken))
    assert line == (
        f"semcodec: error: weights file {entry['file']} fails its sha256 check (registry {entry['sha256'][:12]}, "
        f"file {hashlib.sha256(data).hexdigest()[:12]}): reinstall semcodec or re-export the weights"
    )
    assert not (tmp_path / "o.bin").exists()


def test_file_from_other_weights_is_refused(tmp_path, tiny_weights, small_bin):
    line = one_error_line(semcodec("decode", str(small_bin), "-o", str(tmp_path / "x.png"), env_weights=tiny_weights))
    assert "model 'vit-hp-192'" in line and f"weights folder {tiny_weights} does not have" in line


@pytest.mark.skipif(not (KODAK / "kodim01.png").exists(), reason="Kodak not available")
def test_kodak_file_round_trip_via_cli(tmp_path):
    out = tmp_path / "k.bin"
    assert semcodec("encode", str(KODAK / "kodim01.png"), str(out), "-q", "1").returncode == 0
    assert semcodec("decode", str(out), "-o", str(tmp_path / "k.png")).returncode == 0
    assert Image.open(tmp_path / "k.png").size == (768, 512)


def test_encode_with_tokens_n_returns_n_tokens(tmp_path, small_png):
    from safetensors import safe_open

    out = tmp_path / "pruned.bin"
    assert semcodec("encode", str(small_png), str(out), "--tokens", "10").returncode == 0
    st = tmp_path / "pruned.safetensors"
    assert semcodec("decode", str(out), "--target", "tokens", "-o", str(st)).returncode == 0
    with safe_open(st, "pt") as f:
        assert f.get_tensor("tokens").shape[0] == 10
        assert f.get_tensor("positions").shape == (10,)
        assert f.metadata()["kept_tokens"] == "10"
    bad = semcodec("encode", str(small_png), str(tmp_path / "x.bin"), "--tokens", "0")
    assert bad.returncode == 2 and b"--tokens" in bad.stderr  # click's usage error
    assert not (tmp_path / "x.bin").exists()


def _cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to time the signal")
@pytest.mark.parametrize(
    ("signum", "after_cpu_s"),
    # CPU seconds chosen to land inside the transforms (the later point) and while torch is still
    # being imported (the earlier), where an interrupt once ended the process by SIGINT (status -2)
    # after the message had been printed.
    [("SIGINT", 7.0), ("SIGTERM", 7.0), ("SIGINT", 1.0)],
)
def test_interrupted_encode_leaves_nothing(tmp_path, signum, after_cpu_s):
    import os
    import signal
    import time

    big = tmp_path / "big.png"
    Image.fromarray(synthetic_image(2400, 3600)).save(big)
    out = tmp_path / "out.bin"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "semcodec.cli", "encode", str(big), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        # As from a terminal: a runner started in the background (`cmd &`) hands its children an
        # ignored SIGINT, and Python then rightly installs no Ctrl-C handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    while proc.poll() is None and _cpu_seconds(proc.pid) < after_cpu_s:
        time.sleep(0.05)
    assert proc.poll() is None, "encode finished before it could be interrupted"
    proc.send_signal(getattr(signal, signum))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.decode().strip().splitlines() == ["semcodec: error: interrupted; no output written"]
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_what_needs_no_model_is_refused_before_the_model_loads(tmp_path, tiny_weights, small_png):
    """Bad settings and paths are refused from the registry and the file headers alone: with the
    model's weights file gone, each still gets its own one-line answer, not the weights error."""
    import json
    import shutil

    bits = tmp_path / "tiny.smc"
    assert semcodec("encode", str(small_png), str(bits), "-q", "1", env_weights=tiny_weights).returncode == 0
    broken = tmp_path / "weights"
    shutil.copytree(tiny_weights, broken)
    ((name, entry),) = json.loads((broken / "registry.json").read_text())["models"].items()
    (broken / entry["file"]).unlink()
    spaces = ", ".join([entry["token_space"], *entry.get("token_heads", {})])
    out = str(tmp_path / "out.smc")
    cases = {
        ("encode", str(small_png), out, "--tokens", "99"): f"--tokens 99: {small_png} (130x96) has only 54 latent",
        ("encode", str(small_png), out, "--token-space", "nope"): f"token space 'nope' for model {name} "
        f"(choose from {spaces})",
        ("encode", str(small_png), out, "-q", "9"): "quality 9 is not available",
        ("encode", str(small_png), str(tmp_path / "no" / "x.smc")): f"output folder {tmp_path / 'no'} does not exist",
        ("encode", str(small_png), str(bits)): f"{bits} exists (use --force to overwrite)",
        ("encode", str(tmp_path / "none.png"), out): f"no such file: {tmp_path / 'none.png'}",
        ("decode", str(bits), "-o", str(tmp_path / "x.jpg")): "x.jpg: pixels output must end in .png (got '.jpg')",
        ("decode", str(bits), "--target", "tokens", "-o", str(tmp_path / "t.png")): "must end in .safetensors or .npy",
    }
    for args, message in cases.items():
        line = one_error_line(semcodec(*args, env_weights=broken))
        assert message in line, (args, line)
    assert not (tmp_path / "out.smc").exists() and not (tmp_path / "x.jpg").exists()
    weights_error = one_error_line(semcodec("encode", str(small_png), out, "-q", "1", env_weights=broken))
    assert f"weights file {broken / entry['file']} is missing" in weights_error  # the model itself is needed last
