"""Classical baseline codecs (codec/classical.py): round trips, rate grows with quality, errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.classical import CODECS, get_codec
from codec.errors import FormatError, InputImageError
from codec.metrics import bits_per_pixel, psnr

PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "photos"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 200×168 crop of a real photo (odd multiples of 8 on purpose: codecs pad internally)."""
    return np.asarray(Image.open(PHOTOS / "opencv__fruits.jpg").convert("RGB"))[100:268, 150:350].copy()


@pytest.mark.parametrize("name", sorted(CODECS))
def test_round_trip_keeps_size_and_rate_grows_with_quality(name: str, photo: np.ndarray) -> None:
    codec = get_codec(name)
    h, w = photo.shape[:2]
    rates, quality_db = [], []
    for q in codec.qualities:
        data = codec.encode(photo, q)
        decoded = codec.decode(data)
        assert decoded.mode == "RGB" and decoded.size == (w, h)
        rates.append(bits_per_pixel(len(data), w, h))
        quality_db.append(psnr(photo, decoded).item())
    assert rates == sorted(rates) and len(set(rates)) == len(rates), rates
    assert quality_db[-1] > quality_db[0] + 3.0, quality_db
    assert 20.0 < quality_db[-1] < 60.0


def test_jpeg_has_a_rate_floor_that_avif_goes_under() -> None:
    whole = Image.open(PHOTOS / "opencv__fruits.jpg").convert("RGB")
    bpp = lambda name, q: bits_per_pixel(len(get_codec(name).encode(whole, q)), *whole.size)
    jpeg_floor = bpp("jpeg", 1)
    assert bpp("jpeg", 3) < 1.2 * jpeg_floor  # quality 1-3 barely differ: quantisers saturate
    assert bpp("avif", 0) < jpeg_floor


def test_any_input_mode_becomes_rgb(photo: np.ndarray) -> None:
    codec = get_codec("WEBP")
    rgba = Image.fromarray(photo).convert("RGBA")
    gray = Image.fromarray(photo).convert("L")
    assert codec.decode(codec.encode(rgba, 50)).mode == "RGB"
    assert codec.decode(codec.encode(gray, 50)).size == gray.size


def test_bad_arguments(photo: np.ndarray) -> None:
    jpeg = get_codec("jpeg")
    for bad in (0, 96, 50.0, True, "50"):
        with pytest.raises(ValueError, match=r"quality must be an integer in \[1, 95\]"):
            jpeg.encode(photo, bad)
    with pytest.raises(InputImageError, match="uint8"):
        jpeg.encode(photo.astype(np.float32), 50)
    with pytest.raises(TypeError, match="PIL image"):
        jpeg.encode(photo.tolist(), 50)
    with pytest.raises(ValueError, match="unknown classical codec 'bpg'"):
        get_codec("bpg")


@pytest.mark.parametrize("name", sorted(CODECS))
def test_garbage_and_truncated_streams_raise_format_error(name: str, photo: np.ndarray) -> None:
    codec = get_codec(name)
    with pytest.raises(FormatError, match=name):
        codec.decode(b"definitely not an image")
    data = codec.encode(photo, codec.qualities[-1])
    with pytest.raises(FormatError):
        codec.decode(data[: len(data) // 3])


def test_missing_plugin_names_the_package(photo: np.ndarray) -> None:
    broken = replace(get_codec("jxl"), plugin="no_such_module_here:pillow-jxl-plugin")
    with pytest.raises(ModuleNotFoundError, match="pip install pillow-jxl-plugin"):
        broken.encode(photo, 50)
