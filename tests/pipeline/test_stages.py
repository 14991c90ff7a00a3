"""Encoder and Decoder called directly (they are plain callable classes; Ray only hosts them)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from codec.api import load_codec
from pipeline.stages import Decoder, Encoder


@pytest.fixture(scope="module")
def photos(example_photos) -> list[np.ndarray]:
    """Real photos cut to three different sizes (two share a padded size)."""
    out = []
    for photo, size in zip(example_photos[:3], [(96, 64), (100, 60), (130, 70)], strict=True):
        out.append(np.asarray(Image.open(photo).convert("RGB").resize(size)))
    return out


@pytest.fixture(scope="module")
def codec():
    return load_codec("ditic-test")


def test_encoder_batch_mixes_sizes_and_passes_errors_through(photos, codec) -> None:
    encoder = Encoder(model="ditic-test", quality=2, metrics=True)
    placeholder = np.zeros((1, 1, 3), np.uint8)
    batch = {
        "key": np.array(["a", "bad", "b", "c"]),
        "image": [photos[0], placeholder, photos[1], photos[2]],
        "status": np.array(["ok", "error", "ok", "ok"]),
        "error": np.array([None, "InputImageError: truncated", None, None], dtype=object),
    }
    out = encoder(batch)
    assert "image" not in out and list(out["key"]) == ["a", "bad", "b", "c"]
    assert out["status"] == ["ok", "error", "ok", "ok"] and out["error"][1] == "InputImageError: truncated"
    assert out["payload"][1] == b""
    for i, image in zip([0, 2, 3], photos, strict=True):
        assert (out["width"][i], out["height"][i]) == (image.shape[1], image.shape[0])
        assert out["quality"][i] == 2 and out["model_id"][i] == codec.model_id
        decoded = np.asarray(codec.decode([out["payload"][i]])[0].convert("RGB"))
        assert decoded.shape == image.shape and out["psnr"][i] > 0
        assert out["ms_ssim"][i] is None  # under 161 px: undefined, stored as null


def test_encoder_refuses_an_unknown_quality() -> None:
    with pytest.raises(ValueError, match="quality"):
        Encoder(model="ditic-test", quality=99)


def test_decoder_refuses_payloads_above_its_pixel_limit(photos, codec) -> None:
    small, large = sorted(photos[:2], key=lambda im: np.asarray(im).shape[0] * np.asarray(im).shape[1])
    payloads = codec.encode([small, large], quality=1)
    limit = np.asarray(small).shape[0] * np.asarray(small).shape[1]
    out = Decoder(model="ditic-test", max_pixels=limit)({"key": np.array(["s", "l"]), "payload": payloads})
    assert out["status"] == ["ok", "error"] and "exceeds the limit" in out["error"][1]


def test_decoder_fails_only_the_corrupt_payload(photos, codec) -> None:
    payloads = codec.encode(photos[:2], quality=1)
    corrupt = bytearray(payloads[1])
    corrupt[len(corrupt) // 2] ^= 0x55
    out = Decoder(model="ditic-test")({"key": np.array(["x", "y"]), "payload": [payloads[0], bytes(corrupt)]})
    assert out["status"] == ["ok", "error"] and "ChecksumError" in out["error"][1]
    assert np.array_equal(out["image"][0], np.asarray(codec.decode([payloads[0]])[0].convert("RGB")))
