"""The training data path: listing, decoding, fitting for crops, and the on-device crop bank."""

from __future__ import annotations

import io
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image

from codec.errors import InputImageError
from pipeline.train_data import CropBank, TrainImage, decode_rgb, list_image_urls, load_images


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(_png(_noise(80, 100, 1)))
    (tmp_path / "sub" / "b.PNG").write_bytes(_png(_noise(40, 70, 2)))  # between crop/2 and crop
    (tmp_path / "tiny.png").write_bytes(_png(_noise(20, 20, 3)))  # under crop/2: skipped
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_listing_finds_images_recursively_and_by_glob(folder: Path):
    names = [u.rsplit("/", 1)[-1] for u in list_image_urls(str(folder))]
    assert names == ["a.png", "b.PNG", "tiny.png"]
    assert [u.rsplit("/", 1)[-1] for u in list_image_urls(str(folder / "*.png"))] == ["a.png", "tiny.png"]
    with pytest.raises(InputImageError, match="no images"):
        list_image_urls(str(folder / "sub" / "nothing"))


def test_load_fits_images_for_the_crop(folder: Path):
    images = {im.name: im.pixels for im in load_images(str(folder), crop=64, workers=2)}
    assert sorted(images) == ["a.png", "b.PNG"]  # tiny.png skipped
    assert images["a.png"].shape == (80, 100, 3)  # untouched
    assert min(images["b.PNG"].shape[:2]) == 64  # upscaled to the crop
    assert images["b.PNG"].shape[1] == round(70 * 64 / 40)
    big = load_images(str(folder / "a.png"), crop=32, max_side=50)
    assert big[0].pixels.shape == (40, 50, 3)


def test_load_reads_object_storage_urls():
    fs = fsspec.filesystem("memory")
    fs.pipe("/train-bucket/photos/x.png", _png(_noise(64, 64, 4)))
    fs.pipe("/train-bucket/photos/y.png", _png(_noise(64, 96, 5)))
    images = load_images("memory://train-bucket/photos", crop=64, workers=2)
    assert [im.name for im in images] == ["x.png", "y.png"]
    assert np.array_equal(images[0].pixels, _noise(64, 64, 4))


def test_decode_drops_alpha_and_refuses_garbage():
    rgba = np.dstack([_noise(8, 8), np.full((8, 8), 128, np.uint8)])
    assert decode_rgb(_png(rgba, "RGBA"), "x").shape == (8, 8, 3)
    assert decode_rgb(_png(_noise(8, 8)[..., 0], "L"), "g").shape == (8, 8, 3)
    with pytest.raises(InputImageError, match="broken.jpg"):
        decode_rgb(b"\xff\xd8 not really a jpeg", "broken.jpg")


def test_decode_applies_exif_orientation():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(_noise(10, 20)).save(buf, format="JPEG", exif=exif)
    assert decode_rgb(buf.getvalue(), "rotated.jpg").shape == (20, 10, 3)


def _bank(n: int = 3) -> CropBank:
    return CropBank([TrainImage(f"im{i}", _noise(40 + 8 * i, 48, i)) for i in range(n)])


def test_crops_are_slices_of_the_sources_in_range():
    bank = _bank()
    x = bank.sample(6, 32, np.random.default_rng(0), augment=False)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    for crop in x:
        u8 = ((crop + 1) * 127.5).round().to(torch.uint8)
        assert any(_contains(t, u8) for t in bank.tensors)


def _contains(source: torch.Tensor, crop: torch.Tensor) -> bool:
    windows = source.unfold(1, 32, 1).unfold(2, 32, 1)  # (3, h', w', 32, 32)
    return bool((windows == crop[:, None, None]).all(dim=(0, 3, 4)).any())


def test_sampling_is_reproducible_and_flips_vary():
    bank = _bank()
    a = bank.sample(8, 32, np.random.default_rng(7))
    b = bank.sample(8, 32, np.random.default_rng(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, bank.sample(8, 32, np.random.default_rng(8)))
    with pytest.raises(ValueError, match="exceeds"):
        bank.sample(1, 41, np.random.default_rng(0))


def test_scale_augmentation_area_downscales_a_larger_window():
    # noise in 2x2-pixel blocks, so that a resized window stays in range but is no window of the photo
    photo = np.repeat(np.repeat(_noise(48, 48, 5), 2, axis=0), 2, axis=1)  # (96, 96, 3)
    bank = CropBank([TrainImage("blocks", photo)])
    x = bank.sample(16, 32, np.random.default_rng(1), augment=True, min_scale=0.5)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    plain = bank.sample(16, 32, np.random.default_rng(1), augment=False)
    assert all(_contains(bank.tensors[0], ((c + 1) * 127.5).round().to(torch.uint8)) for c in plain)
    # at least one augmented crop is not a plain window of the photo (it was resized)...
    u8 = [((c + 1) * 127.5).round().to(torch.uint8) for c in x]
    assert not all(_contains(bank.tensors[0], c) for c in u8)
    # ...and min_scale = 1 draws exactly the crops it drew before the option existed
    same = bank.sample(16, 32, np.random.default_rng(1), augment=True, min_scale=1.0)
    assert torch.equal(same, bank.sample(16, 32, np.random.default_rng(1), augment=True))
    with pytest.raises(ValueError, match="min_scale"):
        bank.sample(1, 32, np.random.default_rng(0), min_scale=0.0)


def test_split_holds_out_disjoint_images():
    train, held = _bank(5).split(2, seed=3)
    assert len(train) == 3 and len(held) == 2
    assert not set(train.names) & set(held.names)
    assert held.center_crops(32).shape == (2, 3, 32, 32)
    assert _bank(5).split(0)[1] is None
    with pytest.raises(ValueError, match="hold out"):
        _bank(2).split(2)
