"""The CPU read stage on the generated bad-input corpus and on real photos (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from corpus import build_corpus
from PIL import Image, ImageOps

from pipeline.sources import list_sources, read_images


def _read(folder: Path, **kwargs) -> dict[str, dict]:
    work = list_sources(str(folder))
    out = read_images(
        {"key": np.array(work["key"].to_pylist()), "source_uri": np.array(work["source_uri"].to_pylist())},
        **kwargs,
    )
    return {key: {c: out[c][i] for c in out} for i, key in enumerate(out["key"])}


def test_bad_inputs_become_error_rows_and_odd_modes_follow_the_policy(tmp_path, example_photos) -> None:
    photo = next(p for p in example_photos if p.suffix == ".jpg")
    expected = build_corpus(tmp_path, photo)
    rows = _read(tmp_path)
    assert set(rows) == set(expected)
    for key, want in expected.items():
        row = rows[key]
        if want == "ok":
            assert row["status"] == "ok", (key, row["error"])
            assert row["image"].dtype == np.uint8 and row["image"].shape[2] == 3
            assert (row["height"], row["width"]) == row["image"].shape[:2]
        else:
            assert row["status"] == "error", key
            assert want in row["error"], (key, row["error"])
            assert row["image"].shape == (1, 1, 3)
    assert rows["good/exif_rotated.jpg"]["image"].shape[:2] == (96, 64)  # stored 64x96, shown upright
    assert rows["good/alpha.png"]["mode"] == "RGBA" and rows["good/alpha.png"]["source"]
    assert rows["good/plain.jpg"]["mode"] == "RGB" and rows["good/plain.jpg"]["source"] == b""
    assert rows["good/grey.png"]["mode"] == "L"
    assert rows["bad/empty.jpg"]["source_bytes"] == 0


def test_real_photos_read_exactly(example_photos) -> None:
    folder = example_photos[0].parent
    rows = _read(folder)
    photos = [p for p in example_photos if p.suffix == ".jpg"]
    assert sorted(rows) == sorted(p.name for p in photos)
    for photo in photos:
        row = rows[photo.name]
        reference = np.asarray(ImageOps.exif_transpose(Image.open(photo)).convert("RGB"))
        assert np.array_equal(row["image"], reference)
        assert row["source_bytes"] == photo.stat().st_size
        assert row["bucket"] == f"{-(-reference.shape[0] // 64) * 64}x{-(-reference.shape[1] // 64) * 64}"


def test_missing_objects_and_size_limits_are_error_rows(tmp_path, example_photos) -> None:
    batch = {
        "key": np.array(["gone.jpg", "big.jpg"]),
        "source_uri": np.array([str(tmp_path / "gone.jpg"), str(example_photos[1])]),
    }
    out = read_images(batch, max_source_bytes=100)
    assert out["status"] == ["error", "error"]
    assert "FileNotFoundError" in out["error"][0]
    assert "over the limit" in out["error"][1]
