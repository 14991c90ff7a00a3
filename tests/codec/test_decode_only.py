"""A loaded ``Codec`` pins its float64 entropy-parameter path, and ``decode_only`` codecs decode exactly
what a full codec decodes but refuse to encode. (Their moves of the encoders and the path's originals
to host memory happen on a GPU only: ``test_gpu_fastpath.py``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from codec.api import load_codec
from codec.errors import DiticError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    from helpers import example_photo_paths

    return [np.asarray(Image.open(p).convert("RGB").resize((192, 128))) for p in example_photo_paths()[:2]]


def test_decode_only_decodes_what_the_full_codec_decodes(photos: list[np.ndarray]) -> None:
    full = load_codec("ditic-test")
    reader = load_codec("ditic-test", decode_only=True)
    assert reader.model_id == full.model_id and reader.decode_only and not full.decode_only
    payloads = full.encode(photos, 2)
    for a, b in zip(full.decode(payloads), reader.decode(payloads), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_decode_only_refuses_to_encode_with_a_clear_error(photos: list[np.ndarray]) -> None:
    reader = load_codec("ditic-test", decode_only=True)
    with pytest.raises(DiticError, match="decode_only=True"):
        reader.encode(photos[:1])


def test_a_codec_pins_its_float64_path_whatever_happens_to_the_originals() -> None:
    codec = load_codec("ditic-test").model.codec
    path = codec.entropy_path64()
    with torch.no_grad():
        next(codec.h_s.parameters()).add_(1.0)  # would rebuild an unpinned path (test_model_coding)
    assert codec.entropy_path64() is path
