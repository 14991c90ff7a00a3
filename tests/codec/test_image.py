"""Image policy: modes, EXIF orientation, metadata, alpha, bit depth, broken files, tensor helpers."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from codec import image as policy
from codec.bitstream import ALPHA, EXIF, ICC, Header, pack, unpack
from codec.errors import FormatError, InputImageError

MODEL_ID = "00112233445566ff"


def noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def through_container(prepared: policy.PreparedImage) -> Image.Image:
    """Pack the prepared image's header and metadata, unpack, and restore from its own pixels."""
    header = Header(MODEL_ID, prepared.width, prepared.height, 1, prepared.mode, prepared.source_mode,
                    prepared.bit_depth)  # fmt: skip
    header, _, metadata = unpack(pack(header, [b""], prepared.metadata))
    return policy.restore(prepared.rgb, header, metadata)


def encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_rgb_is_coded_as_is_with_icc_and_exif_kept() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = Image.fromarray(noise(6, 10))
    exif = source.getexif()
    exif[0x010F] = "TestCam"
    image = policy.open_image(encoded(source, "PNG", icc_profile=icc, exif=exif.tobytes()))
    prepared = policy.prepare(image)
    assert (prepared.mode, prepared.source_mode, prepared.bit_depth) == ("RGB", "RGB", 8)
    assert np.array_equal(prepared.rgb, noise(6, 10)) and prepared.metadata[ICC] == icc
    restored = through_container(prepared)
    assert restored.mode == "RGB" and restored.info["icc_profile"] == icc
    assert (
        Image.open(io.BytesIO(encoded(restored, "PNG", exif=restored.info["exif"]))).getexif()[0x010F]
        == "TestCam"
    )


@pytest.mark.parametrize(("orientation", "size"), [(1, (8, 4)), (3, (8, 4)), (6, (4, 8)), (8, (4, 8))])
def test_exif_orientation_is_applied(orientation: int, size: tuple[int, int]) -> None:
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)
    pixels[0, 0] = 255  # a white top-left corner in stored orientation
    source = Image.fromarray(pixels)
    exif = source.getexif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    prepared = policy.prepare(policy.open_image(encoded(source, "PNG", exif=exif.tobytes())))
    assert (prepared.width, prepared.height) == size
    expected = {1: (0, 0), 3: (3, 7), 6: (0, 3), 8: (7, 0)}[orientation]  # where the corner lands
    assert prepared.rgb[expected].tolist() == [255, 255, 255]
    kept = Image.Exif()
    kept.load(prepared.metadata[EXIF])
    assert kept.get(0x0112, 1) == 1 and kept[0x010F] == "TestCam"  # the pixels are upright now


def test_grey_is_coded_as_rgb_and_decoded_as_l() -> None:
    grey = noise(5, 7, 1)[:, :, 0]
    prepared = policy.prepare(grey)
    assert prepared.mode == "L" and np.array_equal(prepared.rgb, np.repeat(grey[:, :, None], 3, 2))
    restored = through_container(prepared)
    assert restored.mode == "L" and np.array_equal(np.asarray(restored), grey)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_alpha_is_kept_losslessly(mode: str) -> None:
    rgba = noise(9, 11, 4, seed=3)
    image = Image.fromarray(rgba, "RGBA")
    image = image.convert(mode) if mode != "PA" else image.convert("RGB").convert("P").convert("PA")
    if mode == "PA":
        image.putalpha(Image.fromarray(rgba[:, :, 3]))
    prepared = policy.prepare(image)
    assert prepared.mode == ("LA" if mode == "LA" else "RGBA") and ALPHA in prepared.metadata
    restored = through_container(prepared)
    assert restored.mode == prepared.mode
    assert np.array_equal(np.asarray(restored.getchannel("A")), rgba[:, :, 3])


def test_palette_with_transparency_becomes_rgba() -> None:
    image = Image.fromarray(noise(4, 4, seed=1)).convert("P")
    image.info["transparency"] = 0
    prepared = policy.prepare(image)
    assert prepared.mode == "RGBA" and prepared.source_mode == "P"
    assert policy.prepare(Image.fromarray(noise(4, 4)).convert("P")).mode == "RGB"


def test_sixteen_bit_is_scaled_and_recorded() -> None:
    values = np.array([[0, 257, 65535], [32896, 1000, 65280]], dtype=np.uint16)
    image = policy.open_image(encoded(Image.fromarray(values), "PNG"))
    prepared = policy.prepare(image)
    assert (prepared.mode, prepared.bit_depth) == ("L", 16)
    assert prepared.rgb[:, :, 0].tolist() == [[0, 1, 255], [128, 4, 254]]
    colour16 = np.stack([values, values // 2, 65535 - values], axis=2)
    prepared = policy.prepare(colour16)
    assert (prepared.mode, prepared.bit_depth) == ("RGB", 16)
    assert prepared.rgb[0, 2].tolist() == [255, 127, 0]


def test_other_modes_convert() -> None:
    rgb = Image.fromarray(noise(4, 6))
    cmyk = policy.prepare(rgb.convert("CMYK"))
    assert (cmyk.mode, cmyk.source_mode) == ("RGB", "CMYK")
    assert policy.prepare(rgb.convert("YCbCr")).mode == "RGB"
    bilevel = policy.prepare(rgb.convert("1"))
    assert (bilevel.mode, bilevel.bit_depth) == ("L", 1) and set(np.unique(bilevel.rgb)) <= {0, 255}
    f = Image.fromarray(np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6), "F")
    assert policy.prepare(f).rgb[-1, -1, 0] == 255


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n garbage", b"not an image at all"])
def test_unreadable_bytes(data: bytes) -> None:
    with pytest.raises(InputImageError, match="cannot read"):
        policy.open_image(data)


def test_truncated_and_empty_files(tmp_path: Path) -> None:
    good = encoded(Image.fromarray(noise(64, 64)), "JPEG", quality=90)
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputImageError, match="cut.jpg"):
        policy.open_image(tmp_path / "cut.jpg")
    with pytest.raises(InputImageError, match="empty"):
        policy.open_image(tmp_path / "empty.png")
    with pytest.raises(FileNotFoundError):
        policy.open_image(tmp_path / "missing.png")


def test_pixel_limit_is_checked_before_decoding() -> None:
    big = encoded(Image.new("L", (4000, 3000)), "PNG")
    with pytest.raises(InputImageError, match="above the limit of 1000000"):
        policy.open_image(big, max_pixels=1_000_000)
    with pytest.raises(InputImageError, match="limit"):
        policy.prepare(np.zeros((100, 100), np.uint8), max_pixels=9999)


def test_bad_arrays_and_alpha_planes() -> None:
    with pytest.raises(InputImageError, match="uint8 or uint16"):
        policy.prepare(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InputImageError, match="shape"):
        policy.prepare(np.zeros((4, 4, 5), np.uint8))
    header = Header(MODEL_ID, 4, 4, 1, mode="RGBA")
    with pytest.raises(FormatError, match="alpha"):
        policy.restore(noise(4, 4), header, {ALPHA: b"\x78\x9c garbage"})
    with pytest.raises(FormatError, match="alpha"):
        policy.restore(noise(4, 4), header, {ALPHA: zlib.compress(bytes(10_000_000))})


def test_tensor_helpers_round_trip() -> None:
    arrays = [noise(30, 50, seed=s) for s in range(2)]
    x = policy.to_tensor(arrays)
    assert x.shape == (2, 3, 30, 50) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    for mode in ("replicate", "reflect"):
        padded, (pad_right, pad_bottom) = policy.pad(x, 32, mode)
        assert padded.shape == (2, 3, 32, 64) and (pad_right, pad_bottom) == (14, 2)
        assert torch.equal(policy.crop(padded, 50, 30), x)
    assert torch.equal(policy.pad(x, 32)[0][..., 31, 49], x[..., 29, 49])  # replicated edge
    assert policy.pad(x[..., :4, :4], 32, "reflect")[0].shape == (2, 3, 32, 32)  # falls back
    assert np.array_equal(policy.to_uint8(x), np.stack(arrays))
    assert [np.array_equal(np.asarray(p), a) for p, a in zip(policy.to_pil(x), arrays, strict=True)] == [
        True
    ] * 2
    with pytest.raises(ValueError, match="equal-size"):
        policy.to_tensor([arrays[0], arrays[0][:10]])
