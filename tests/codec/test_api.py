"""The Codec API: any size, batching by padded size, image modes, payload checks, tiled decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from codec import bitstream
from codec.errors import ModelMismatchError

pytestmark = pytest.mark.usefixtures("one_thread")


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_odd_sizes_roundtrip(tiny_codec):
    sizes = [(33, 47), (1, 1), (300, 17)]
    items = tiny_codec.encode_items([_noise(h, w, i) for i, (h, w) in enumerate(sizes)], quality=2)
    for item, (h, w) in zip(items, sizes, strict=True):
        header = tiny_codec.info(item.payload)
        assert (item.width, item.height) == (header.width, header.height) == (w, h)
        assert header.coded_width % 64 == 0 and header.coded_height % 64 == 0
        assert header.pad_right < 64 and header.pad_bottom < 64 and header.quality == 2
        assert header.model_id == tiny_codec.model_id
        assert item.bpp == pytest.approx(8 * len(item.payload) / (w * h))
        assert item.enc_ms > 0 and item.entropy_ms > 0
    decoded = tiny_codec.decode_items([i.payload for i in items])
    assert [d.image.size for d in decoded] == [(w, h) for h, w in sizes]
    assert all(d.image.mode == "RGB" and d.dec_ms > 0 for d in decoded)


def test_mixed_batch_groups_by_padded_size(tiny_codec, monkeypatch):
    calls = []
    compress = tiny_codec.model.compress

    def counting(x, quality):
        calls.append(tuple(x.shape))
        return compress(x, quality)

    monkeypatch.setattr(tiny_codec.model, "compress", counting)
    images = [_noise(40, 60, 1), _noise(64, 128, 2), _noise(64, 64, 3), _noise(70, 100, 4), _noise(20, 90, 5)]
    payloads = tiny_codec.encode(images, quality=4)
    # padded: 64x64, 64x128, 64x64, 128x128, 64x128 -> three batches
    assert sorted(calls) == sorted([(2, 3, 64, 64), (2, 3, 64, 128), (1, 3, 128, 128)])
    # batching does not change the result: each image alone gives the same payload
    monkeypatch.undo()
    assert tiny_codec.encode([images[3]], quality=4)[0] == payloads[3]
    decoded = tiny_codec.decode(payloads[::-1])
    assert [im.size for im in decoded] == [(im.shape[1], im.shape[0]) for im in images[::-1]]


def test_modes_and_metadata_follow_the_image_policy(tiny_codec):
    rgba = Image.fromarray(np.dstack([_noise(30, 40), np.full((30, 40), 7, np.uint8)]), "RGBA")
    grey16 = Image.fromarray(np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50)
    assert grey16.mode == "I;16"
    rgb = Image.fromarray(_noise(30, 40))
    rgb.info["icc_profile"] = b"fake-icc-profile-bytes"
    out = tiny_codec.decode(tiny_codec.encode([rgba, grey16, rgb]))
    assert [im.mode for im in out] == ["RGBA", "L", "RGB"]
    assert np.array_equal(np.asarray(out[0])[..., 3], np.full((30, 40), 7))  # alpha is lossless
    assert out[2].info.get("icc_profile") == b"fake-icc-profile-bytes"
    assert tiny_codec.info(tiny_codec.encode([grey16])[0]).bit_depth == 16


def test_payload_from_another_model_is_refused(tiny_codec):
    payload = tiny_codec.encode([_noise(20, 20)])[0]
    header, strings, metadata = bitstream.unpack(payload)
    other = bitstream.pack(bitstream.Header(**{**header.to_dict(), "model_id": "0123456789abcdef"}), strings)
    with pytest.raises(ModelMismatchError, match=f"0123456789abcdef.*{tiny_codec.model_id}"):
        tiny_codec.decode([other])


def test_quality_choice(tiny_codec):
    assert tiny_codec.qualities == [1, 2, 3, 4]
    assert tiny_codec.info(tiny_codec.encode([_noise(8, 8)])[0]).quality == 4  # default: the best
    with pytest.raises(ValueError, match="quality"):
        tiny_codec.encode([_noise(8, 8)], quality=9)


def test_seeded_models_are_reproducible(tiny_codec):
    from codec.api import load_codec

    again = load_codec("ditic-test")
    assert again.model_id == tiny_codec.model_id and not again.trained
    image = _noise(50, 70, 9)
    assert again.encode([image], quality=1) == tiny_codec.encode([image], quality=1)


def test_small_model_loads_and_says_whether_it_is_trained(capsys):
    from codec.api import EMBEDDED_WEIGHTS, load_codec

    codec = load_codec("ditic-small")
    load_codec("ditic-small")
    warning = capsys.readouterr().err
    assert codec.config.name == "ditic-small" and len(codec.model_id) == 16
    if (EMBEDDED_WEIGHTS / "ditic-small.safetensors").is_file():
        assert codec.trained and warning == ""
    else:
        assert not codec.trained and warning.count("untrained") == 1


def test_official_needs_weights():
    from codec.api import EMBEDDED_WEIGHTS, load_codec
    from codec.errors import CheckpointError

    if (EMBEDDED_WEIGHTS / "ditic-official.safetensors").is_file():
        pytest.skip("converted official weights are installed")
    with pytest.raises(CheckpointError, match="convert-official"):
        load_codec("ditic-official")


class _LocalDecoder(torch.nn.Module):
    """A decoder with no spatial context (x32 nearest upsampling): tiling must not change its output."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(z[:, :3], scale_factor=32, mode="nearest")


def test_tiled_decoding_blends_to_the_whole():
    from codec.autoencoder import decode_latent

    vae = torch.nn.Module()
    vae.decoder = _LocalDecoder()
    z = torch.randn(1, 4, 7, 11)
    whole = decode_latent(vae, z, tiled=False)
    tiled = decode_latent(vae, z, tiled=True, tile=4, overlap=2)
    assert tiled.shape == whole.shape == (1, 3, 224, 352)
    assert torch.allclose(tiled, whole, atol=1e-6)


def test_tiling_is_automatic_beyond_the_memory_budget(tiny_model):
    """Under a budget that holds a small decode whole but not a tall one, the tall latent is decoded
    in pieces (the full-resolution output head never sees it whole: the split plan's strips) and still
    comes back at full size."""
    from codec.autoencoder import decode_latent, decoder_bytes_per_pixel

    per_pixel = decoder_bytes_per_pixel(tiny_model.vae.config, torch.float32)
    budget = 4 * (20 * 32) * (4 * 32) * per_pixel  # four times the pixels of a 20x4 latent
    sizes = []
    head = tiny_model.vae.decoder.conv_act  # a module in every plan (carried strips call the convs' weights)
    hook = head.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    try:
        with torch.no_grad():
            small = decode_latent(tiny_model.vae, torch.randn(1, 8, 3, 5), budget_bytes=budget)
            large = decode_latent(tiny_model.vae, torch.randn(1, 8, 130, 4), budget_bytes=budget)
    finally:
        hook.remove()
    assert small.shape == (1, 3, 96, 160) and large.shape == (1, 3, 130 * 32, 128)
    assert sizes[0] == (96, 160) and len(sizes) > 2 and max(s[0] for s in sizes[1:]) < 130 * 32
    assert torch.isfinite(large).all()


def test_runtime_dtype_does_not_change_the_decoded_latents(tiny_codec):
    """The entropy-parameter path keeps the checkpoint's precision (and runs in float64), so a bfloat16
    codec and a float32 codec read each other's payloads to the same y_hat."""
    from codec.api import load_codec

    half = load_codec("ditic-test", dtype=torch.bfloat16)
    assert half.model_id == tiny_codec.model_id
    payload = half.encode([_noise(70, 90, 11)], quality=4)[0]
    strings = [bitstream.unpack(payload)[1]]
    y_half = half.model.decompress_heads(strings, (2, 2), 4)["y_hat"]
    y_full = tiny_codec.model.decompress_heads(strings, (2, 2), 4)["y_hat"]
    assert torch.equal(y_half, y_full)
    assert tiny_codec.decode([payload])[0].size == (90, 70)
