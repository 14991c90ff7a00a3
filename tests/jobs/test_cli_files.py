"""``ditic compress`` / ``decompress`` / ``info`` end to end with the tiny ``ditic-test`` model.

The photos are the repo's real example photos, reduced 4x so the CPU model runs in seconds. One
compress and one decompress run serve the whole module; the error cases run on top of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from codec.bitstream import read_header
from jobs.cli import main

MODEL = ["--model", "ditic-test", "--device", "cpu"]


@pytest.fixture(scope="module")
def photos(example_photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for src in [p for p in example_photos if p.suffix.lower() in (".jpg", ".jpeg", ".png")][:3]:
        target = folder / f"{src.stem}.png"
        with Image.open(src) as image:
            image.reduce(4).save(target)
        paths.append(target)
    assert len(paths) == 3, "examples/photos should hold at least three photos"
    grey = folder / "grey.png"
    Image.open(paths[0]).convert("LA").save(grey)  # a grey image with an alpha channel
    return [*paths, grey]


@pytest.fixture(scope="module")
def compressed(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("dtic")
    return main(["compress", *map(str, photos), "-o", str(out), "-q", "2", "--batch", "3", *MODEL]), out


@pytest.fixture(scope="module")
def decompressed(compressed: tuple[int, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    _, out = compressed
    rec = tmp_path_factory.mktemp("rec")
    return main(["decompress", *map(str, sorted(out.glob("*.dtic"))), "-o", str(rec), *MODEL]), rec


def test_compress_writes_one_payload_per_image(photos: list[Path], compressed: tuple[int, Path]) -> None:
    code, out = compressed
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.dtic" for p in photos)
    for photo in photos:
        header = read_header((out / f"{photo.stem}.dtic").read_bytes())
        with Image.open(photo) as image:
            assert (header.width, header.height) == image.size
        assert header.quality == 2 and header.mode == ("LA" if photo.stem == "grey" else "RGB")


def test_decompress_restores_size_and_mode(photos: list[Path], decompressed: tuple[int, Path]) -> None:
    code, rec = decompressed
    assert code == 0
    for photo in photos:
        with Image.open(rec / f"{photo.stem}.png") as restored, Image.open(photo) as original:
            assert restored.size == original.size
            assert restored.mode == ("LA" if photo.stem == "grey" else "RGB")
            if photo.stem == "grey":  # alpha is lossless
                assert restored.getchannel("A").tobytes() == original.getchannel("A").tobytes()


def test_info_human_and_json(compressed: tuple[int, Path], capsys: pytest.CaptureFixture) -> None:
    _, out = compressed
    payload = sorted(out.glob("*.dtic"))[0]
    assert main(["info", str(payload)]) == 0
    text = capsys.readouterr().out
    assert "DiT-IC payload v1" in text and "quality 2" in text and "bpp" in text
    assert main(["info", str(payload), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["payload_bytes"] == payload.stat().st_size and d["quality"] == 2 and len(d["string_bytes"]) == 2


def test_bad_files_fail_alone(
    photos: list[Path], compressed: tuple[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(photos[0].read_bytes()[:300])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    code = main(["compress", str(corrupt), str(photos[1]), str(empty), "-o", str(out), *MODEL])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == [f"{photos[1].stem}.dtic"]
    errors = [line for line in captured.err.splitlines() if line.startswith("ditic compress: ")]
    assert any(f"{corrupt}: cannot read image" in line for line in errors)
    assert any(f"{empty}: cannot read image: it is empty" in line for line in errors)
    assert "Traceback" not in captured.err
    assert "compressed 1 of 3 files" in captured.out


def test_truncated_payload_fails_alone(
    compressed: tuple[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _, out = compressed
    good, other = sorted(p for p in out.glob("*.dtic") if p.stem != "grey")[:2]
    cut = tmp_path / "cut.dtic"
    cut.write_bytes(other.read_bytes()[:-10])
    rec = tmp_path / "rec"
    code = main(["decompress", str(cut), str(good), "-o", str(rec), *MODEL])
    captured = capsys.readouterr()
    assert code == 1 and (rec / f"{good.stem}.png").is_file() and not (rec / "cut.png").exists()
    assert f"ditic decompress: {cut}: payload truncated in string " in captured.err
    assert main(["info", str(cut)]) == 1
    assert "payload truncated" in capsys.readouterr().err


def test_usage_errors(photos: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compress", str(photos[0]), "-o", str(tmp_path), "-q", "99", *MODEL]) == 2
    err = capsys.readouterr().err
    assert "quality 99 is not one of" in err and "model 'ditic-test' is untrained" in err
    assert main(["compress", str(photos[0]), "-o", str(tmp_path), "--model", "no-such-model"]) == 1
    assert "no-such-model" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.dtic")]) == 1
    assert "missing.dtic" in capsys.readouterr().err


def test_decompress_max_pixels_bounds_untrusted_payloads(
    compressed: tuple[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _, out = compressed
    payload = sorted(p for p in out.glob("*.dtic") if p.stem != "grey")[0]
    header = read_header(payload.read_bytes())
    rec = tmp_path / "rec"
    pixels = header.width * header.height
    code = main(["decompress", str(payload), "-o", str(rec), "--max-pixels", str(pixels - 1), *MODEL])
    assert code == 1 and not (rec / f"{payload.stem}.png").exists()
    assert "exceeds the limit of" in capsys.readouterr().err
    assert main(["decompress", str(payload), "-o", str(rec), "--max-pixels", str(pixels), *MODEL]) == 0
