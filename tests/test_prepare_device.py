"""tools/prepare_device.py: the photos a lent GPU trains on, and its refusal when there are none."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "prepare_device.py"


@pytest.fixture
def prepare_device(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("prepare_device", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path / "repo")
    return module


def test_shrink_photos_keeps_folders_and_shrinks_only_large_photos(prepare_device, tmp_path):
    source = tmp_path / "photos"
    (source / "a").mkdir(parents=True)
    Image.new("RGB", (600, 400), (200, 10, 10)).save(source / "a" / "wide.png")
    Image.new("RGB", (200, 300), (10, 200, 10)).save(source / "small.jpg")
    (source / "notes.txt").write_text("not a photo")

    count = prepare_device.shrink_photos(source, tmp_path / "out", short_side=256, quality=90)

    assert count == 2
    with Image.open(tmp_path / "out" / "a" / "wide.jpg") as wide:
        assert wide.size == (384, 256)
    with Image.open(tmp_path / "out" / "small.jpg") as small:
        assert small.size == (200, 300)
    assert not (tmp_path / "out" / "notes.jpg").exists()


def test_no_photos_is_one_line_and_exit_1_before_any_download(prepare_device, tmp_path, monkeypatch, capsys):
    def no_download(*_args):
        raise AssertionError("downloaded wheels for an empty data folder")

    monkeypatch.setattr(prepare_device, "download_wheels", no_download)
    (tmp_path / "empty").mkdir()

    assert prepare_device.main(["codec", "--data", str(tmp_path / "empty")]) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no photos under")
    assert "/.gpu/" in (tmp_path / "repo" / ".git" / "info" / "exclude").read_text().splitlines()
