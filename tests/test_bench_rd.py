"""`python -m semcodec.bench rd`: every curve in one run, a BD-rate column per semcodec curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semcodec.bench.__main__ import main
from tests.conftest import synthetic_image


def test_rd_with_a_refined_curve_and_quality_subsets(tmp_path: Path, tiny_weights: Path, monkeypatch):
    """``--bd-qualities FIRST-LAST`` BD-rates exactly the semcodec points of those qualities.

    A BD-rate cannot tell which points it came from (the tiny model's curve need not share a PSNR
    interval with any anchor, and then every BD-rate is NaN), so the points handed to ``bd_table``
    are checked instead.
    """
    from semcodec.bench import rd as rd_bench

    bd_inputs: list[list[dict]] = []
    real_bd_table = rd_bench.bd_table

    def recording_bd_table(test: list[dict], curves: dict[str, list[dict]]) -> dict[str, float]:
        bd_inputs.append(list(test))
        return real_bd_table(test, curves)

    monkeypatch.setattr(rd_bench, "bd_table", recording_bd_table)
    data = tmp_path / "kodak"
    data.mkdir()
    Image.fromarray(synthetic_image(176, 176, seed=5)).save(data / "a.png")
    anchors = tmp_path / "anchors.json"  # the published curves' format; CI's clone has no ../shared
    vtm = [{"bpp": b, "psnr": p} for b, p in ((0.1, 28.0), (0.2, 30.5), (0.4, 33.0), (0.8, 36.0))]
    anchors.write_text(json.dumps({"curves": {"VTM": vtm}}))
    out = tmp_path / "out"
    args = ["rd", "--dataset", str(data), "--weights", str(tiny_weights), "--anchors", str(anchors)]
    args += ["--out", str(out), "--refine-steps", "2", "--bd-qualities", "1-2"]
    args += ["--bd-qualities", "1-1", "--bd-qualities", "2-2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "rd.json").read_text())
    refined = saved["semcodec_refined"]["semcodec refined 2"]
    assert [r["quality"] for r in refined] == [r["quality"] for r in saved["semcodec"]]
    assert all(r["enc_refine_s"] > 0 for r in refined) and all("enc_refine_s" not in r for r in saved["semcodec"])
    names = set(saved["bd_rate"])
    assert (
        set(saved["bd_rate_refined"]["semcodec refined 2"])
        == names
        > {"AVIF (Pillow/libavif, speed 6)", "VTM (published)"}
    )
    header = (
        "| BD-rate (PSNR) against | semcodec | semcodec refined 2 | semcodec q1-2 | semcodec q1-1 | semcodec q2-2 |"
    )
    assert header in result.output
    assert set(saved["bd_rate_qualities"]) == {"semcodec q1-2", "semcodec q1-1", "semcodec q2-2"}
    assert set(saved["bd_rate_qualities"]["semcodec q2-2"]) == names
    full = saved["semcodec"]
    assert [p["quality"] for p in full] == [1, 2]
    # two bd_table calls per curve (same-run codecs, published anchors), curves in the table's order
    full_points = [(p["quality"], p["bpp"], p["psnr"]) for p in full]
    points = [[(p["quality"], p["bpp"], p["psnr"]) for p in test] for test in bd_inputs]
    refined_points = [(p["quality"], p["bpp"], p["psnr"]) for p in refined]
    assert (
        points
        == [full_points] * 2 + [refined_points] * 2 + [full_points] * 2 + [full_points[:1]] * 2 + [full_points[1:]] * 2
    )
    assert (out / "rd.png").stat().st_size > 0


def test_a_bench_dataset_is_a_folder_or_a_list_of_shared_images(tmp_path):
    """`--dataset bench/sets/structured.txt`: a list of images relative to the shared data; a
    missing entry or another kind of file is refused by name, before any benchmark runs."""
    from semcodec.bench.datasets import SETS, image_paths
    from semcodec.errors import InputError

    (tmp_path / "data" / "set").mkdir(parents=True)
    for name in ("b.png", "a.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "data" / "set" / name)
    listing = tmp_path / "list.txt"
    listing.write_text("# a comment\nset/b.png\n\nset/a.png  # trailing\n")
    assert image_paths(listing, root=tmp_path / "data") == [tmp_path / "data" / "set" / n for n in ("b.png", "a.png")]
    assert image_paths(tmp_path / "data" / "set") == [tmp_path / "data" / "set" / n for n in ("a.png", "b.png")]
    listing.write_text("set/b.png\nset/gone.png\n")
    with pytest.raises(InputError, match="1 listed images are missing"):
        image_paths(listing, root=tmp_path / "data")
    with pytest.raises(InputError, match="folder or a .txt list"):
        image_paths(tmp_path / "data" / "set" / "a.png")
    entries = [line for line in (SETS / "structured.txt").read_text().splitlines() if line and line[0] != "#"]
    assert len(entries) == len(set(entries)) >= 24


def test_per_image_bench_records_both_files_and_marks_a_larger_classical_one(tmp_path, tiny_weights):
    """`bench per-image`: a row per image and quality with both file sizes; a row where the classical
    codec could not go as small as semcodec is marked, so no gain is silently bought with bytes."""
    from semcodec.bench import classical, per_image

    data = tmp_path / "set"
    data.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_image(96, 128, seed=40 + i)).save(data / f"{i}.png")
    sizes: list[tuple[int, int]] = []
    real = classical.at_most_bytes

    def recording(encoder, pixels, budget):
        size, decoded = real(encoder, pixels, budget)
        sizes.append((size, budget))
        return size, decoded

    per_image.at_most_bytes = recording
    try:
        args = ["per-image", "--dataset", str(data), "--weights", str(tiny_weights), "--quality", "1"]
        result = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "rows.json")])
    finally:
        per_image.at_most_bytes = real
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["image"] for r in rows] == ["0.png", "1.png"] and all(np.isfinite(r["q1_gain_db"]) for r in rows)
    assert [(r["q1_AVIF_bytes"], r["q1_bytes"]) for r in rows] == sizes
    larger = sum(size > budget for size, budget in sizes)  # tiny files: AVIF's smallest may be larger
    assert result.output.count("*") == larger + (1 if larger else 0)  # the marks and a footnote
    assert "| mean of 2 |" in result.output and "q1 dB vs AVIF" in result.output


def test_per_image_bench_shrinks_each_image_first(tmp_path, tiny_weights):
    """`bench per-image --shrink 2` codes every image at half its size (bpp over the shrunk pixels)."""
    from semcodec.bench.per_image import shrunk

    image = synthetic_image(97, 130, seed=3)
    assert shrunk(image, 1) is image and shrunk(image, 2).shape == (48, 65, 3)
    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(image).save(data / "a.png")
    args = ["per-image", "--dataset", str(data), "--weights", str(tiny_weights), "--quality", "1", "--shrink", "2"]
    result = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "rows.json")])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    assert row["megapixels"] == 48 * 65 / 1e6 and "shrunk 2x" in result.output


def test_effort_bench_measures_each_level_against_effort_0_on_the_same_images(tmp_path, tiny_weights):
    """`bench effort`: one row per level with its refinement steps, effort 0 always included as the
    anchor (BD-rate 0 against itself), the points of every quality."""
    from semcodec.codec.defaults import EFFORT_REFINE_STEPS

    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(synthetic_image(176, 176, seed=50)).save(data / "a.png")  # MS-SSIM needs > 160 px
    args = ["effort", "--dataset", str(data), "--weights", str(tiny_weights), "--effort", "1"]
    result = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "rows.json")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["effort"], r["refine_steps"]) for r in rows] == [(0, 0), (1, EFFORT_REFINE_STEPS[1])]
    assert rows[0]["bd_rate"] == 0 or np.isnan(rows[0]["bd_rate"])
    assert all(len(r["points"]) == len(rows[0]["points"]) for r in rows)
    assert all(p["enc_refine_s"] > 0 for p in rows[1]["points"])
    bad = CliRunner().invoke(main, ["effort", "--dataset", str(data), "--effort", str(len(EFFORT_REFINE_STEPS))])
    assert bad.exit_code != 0 and "--effort" in bad.output


def test_kodak_bench_weighs_a_model_against_a_saved_rd_run(tmp_path, tiny_weights):
    """`bench kodak --against rd.json` BD-rates the new rows against the saved run's curves (its own
    semcodec curve included) and refuses a run of another image count."""
    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(synthetic_image(176, 176, seed=7)).save(data / "a.png")
    base = ["kodak", "--dataset", str(data), "--weights", str(tiny_weights)]
    first = CliRunner().invoke(main, [*base, "--json", str(tmp_path / "rows.json")])
    assert first.exit_code == 0, first.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    twice_the_bytes = [{**r, "bpp": 2 * r["bpp"]} for r in rows]
    saved = tmp_path / "rd.json"
    saved.write_text(json.dumps({"semcodec": rows, "classical": {"Twice": twice_the_bytes}}))
    result = CliRunner().invoke(main, [*base, "--against", str(saved)])
    assert result.exit_code == 0, result.output
    assert "| semcodec (that run) | +0.00% |" in result.output and "| Twice | -50.00% |" in result.output
    saved.write_text(json.dumps({"semcodec": [{**r, "images": 24} for r in rows], "classical": {}}))
    refused = CliRunner().invoke(main, [*base, "--against", str(saved)])
    assert refused.exit_code != 0 and "measured 24 images, this one 1" in refused.output
    assert "semcodec q1" not in refused.output  # refused before coding anything
    (tmp_path / "rows.json").write_text("[]")
    not_rd = CliRunner().invoke(main, [*base, "--against", str(tmp_path / "rows.json")])
    assert not_rd.exit_code != 0 and "not a bench rd JSON" in not_rd.output
