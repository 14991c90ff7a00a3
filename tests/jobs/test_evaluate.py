"""``ditic evaluate`` end to end on two small lossless photos: classical codecs and the tiny
learned codec, every output file checked for content, and the numbers re-derived independently."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from codec.classical import get_codec
from codec.errors import InputImageError
from codec.metrics import bits_per_pixel, psnr
from jobs import evaluate_fid
from jobs.cli import main
from jobs.evaluate import evaluate, parse_qualities
from jobs.evaluate_bdrate import bd_rate

PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "photos"
SCHEMA = {"bpp", "psnr-rgb", "ms-ssim", "st-lpips", "encoding_time", "decoding_time"}


def photo(name: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    """A crop, downscaled 2x: smooth enough that the source's JPEG blocks are gone."""
    return Image.open(PHOTOS / name).convert("RGB").crop(box).resize(size, Image.LANCZOS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    photo("opencv__fruits.jpg", (0, 0, 384, 352), (192, 176)).save(folder / "fruits.png")
    photo("opencv__butterfly.jpg", (100, 50, 400, 290), (150, 120)).save(folder / "butterfly.png")
    (folder / "notes.txt").write_text("not an image: listing skips it")
    return folder


@pytest.fixture(scope="module")
def cli_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evaluation")
    argv = ["evaluate", str(dataset), "--codecs", "jpeg,webp,ditic-test", "--qualities", "jpeg=5,20,50",
            "--qualities", "webp=0,30,75", "--qualities", "ditic-test=2", "--anchor", "webp",
            "--out", str(out)]
    assert main(argv) == 0
    return out


def test_compressai_json_per_codec(cli_run: Path) -> None:
    for name, points in (("jpeg", 3), ("webp", 3), ("ditic-test", 1)):
        data = json.loads((cli_run / f"{name}.json").read_text())
        assert data["name"] == name and data["description"]
        results = data["results"]
        assert SCHEMA <= set(results)
        assert all(len(results[k]) == points for k in SCHEMA)
        assert all(b > 0 for b in results["bpp"]) and all(t > 0 for t in results["encoding_time"])
        assert all(0 < v < 1 for v in results["st-lpips"])
        # MS-SSIM exists for the 192x176 photo only; the 150x120 one is below its 161 px minimum
        assert all(0 < v <= 1 for v in results["ms-ssim"])
    jpeg = json.loads((cli_run / "jpeg.json").read_text())["results"]
    assert jpeg["bpp"] == sorted(jpeg["bpp"]) and jpeg["psnr-rgb"] == sorted(jpeg["psnr-rgb"])
    assert "UNTRAINED" in json.loads((cli_run / "ditic-test.json").read_text())["description"]


def test_per_image_rows_recompute(cli_run: Path, dataset: Path) -> None:
    with open(cli_run / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (3 + 3 + 1)
    assert pq.read_table(cli_run / "per_image.parquet").num_rows == len(rows)
    row = next(r for r in rows if r["codec"] == "jpeg" and r["quality"] == "20" and r["key"] == "fruits.png")
    original = np.asarray(Image.open(dataset / "fruits.png"))
    data = get_codec("jpeg").encode(original, 20)  # deterministic: the same bytes again
    assert int(row["bytes"]) == len(data)
    assert float(row["bpp"]) == pytest.approx(bits_per_pixel(len(data), 192, 176))
    decoded = get_codec("jpeg").decode(data)
    assert float(row["psnr"]) == pytest.approx(psnr(original, decoded).item(), abs=1e-4)
    small = [r for r in rows if r["key"] == "butterfly.png"]
    assert all(math.isnan(float(r["ms_ssim"])) for r in small)
    assert all(int(r["bytes"]) > 0 for r in rows if r["codec"] == "ditic-test")


def test_bd_rates_plots_and_summary(cli_run: Path) -> None:
    bd = json.loads((cli_run / "bd_rate.json").read_text())
    assert bd["anchor"] == "webp" and set(bd["bd"]) == {"jpeg", "ditic-test"}
    curves = {n: json.loads((cli_run / f"{n}.json").read_text())["results"] for n in ("jpeg", "webp")}
    expected = bd_rate(curves["webp"]["bpp"], curves["webp"]["psnr-rgb"],
                       curves["jpeg"]["bpp"], curves["jpeg"]["psnr-rgb"])
    got = bd["bd"]["jpeg"]["bd-rate psnr-rgb"]
    assert (got is None and math.isnan(expected)) or got == pytest.approx(expected)
    for metric in ("psnr_rgb", "ms_ssim", "st_lpips"):
        path = cli_run / f"rd_{metric}.png"
        assert path.stat().st_size < 200_000
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300
    summary = (cli_run / "summary.md").read_text()
    assert "| codec | quality | bpp |" in summary and "BD-rate against webp" in summary
    assert "| ditic-test | 2 |" in summary and "MS-SSIM undefined for 1 image(s)" in summary
    assert bd["bd"]["ditic-test"]["bd-rate psnr-rgb"] is None  # one rate point is no curve


def test_fid_reports_not_enough_patches(dataset: Path, tmp_path: Path) -> None:
    result = evaluate(str(dataset), ["jpeg"], tmp_path, qualities={"jpeg": [10, 40]}, fid=True)
    assert any("not enough patches (0 < 2048" in note for note in result.notes)
    assert "fid" not in json.loads((tmp_path / "jpeg.json").read_text())["results"]


def test_fid_computed_when_there_are_enough_patches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    photo("opencv__fruits.jpg", (0, 0, 512, 256), (512, 256)).save(folder / "wide.png")  # 2 patches
    monkeypatch.setattr(evaluate_fid, "MIN_PATCHES", 2)
    result = evaluate(str(folder), ["jpeg"], tmp_path / "out", qualities={"jpeg": [3, 60]}, fid=True)
    fid = json.loads((tmp_path / "out" / "jpeg.json").read_text())["results"]["fid"]
    assert len(fid) == 2 and all(np.isfinite(fid)) and fid[0] > fid[1] >= -1e-6
    assert result.fid["jpeg"] == fid


def test_parse_qualities() -> None:
    assert parse_qualities(["1,2", "avif=0,30"], ["avif", "jpeg"]) == {"avif": [0, 30], "jpeg": [1, 2]}
    assert parse_qualities([], ["jpeg"]) == {}
    with pytest.raises(ValueError, match="not in --codecs"):
        parse_qualities(["bpg=1"], ["jpeg"])
    with pytest.raises(ValueError, match="integers"):
        parse_qualities(["jpeg=high"], ["jpeg"])
    with pytest.raises(ValueError, match="lists no quality"):
        parse_qualities(["jpeg="], ["jpeg"])


def test_bad_inputs_fail_with_one_line(tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputImageError, match="no images found"):
        evaluate(str(empty), ["jpeg"], tmp_path / "out")
    assert main(["evaluate", str(dataset), "--codecs", "jpeg,nonesuch", "--out", str(tmp_path / "o")]) == 1
    assert "nonesuch" in capsys.readouterr().err
    assert main(["evaluate", str(dataset), "--codecs", "jpeg", "--qualities", "jpeg=0",
                 "--out", str(tmp_path / "o")]) == 1
    assert "quality must be an integer in [1, 95]" in capsys.readouterr().err
