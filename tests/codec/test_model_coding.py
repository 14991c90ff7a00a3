"""Entropy coding through the model: exact latents, determinism across threads, the index guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.entropy import scale_indexes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 12), size=(128, 192), mode="bilinear")
    return (smooth + 0.1 * torch.randn(2, 3, 128, 192)).clamp(0, 1) * 2 - 1


def _encode(model, x, quality):
    latent, aux = model.encode_latent(x)
    return model.codec.compress(latent, aux, quality)


def test_roundtrip_reproduces_the_encoders_latents(tiny_model, images):
    strings, y_hat_enc = _encode(tiny_model, images, 4)
    assert len(strings) == 2 and all(len(s) == 2 for s in strings)
    heads = tiny_model.decompress_heads(strings, (2, 3), 4)
    assert torch.equal(heads["y_hat"], y_hat_enc)
    assert heads["mean"].shape == (2, 8, 4, 6) and heads["prompt"].shape == (2, 8, 4, 6)
    x_hat = tiny_model.decompress(strings, (2, 3), 4)
    assert x_hat.shape == images.shape and x_hat.abs().max() <= 1
    # each image's strings decode alone to the same pixels as in the batch
    alone = tiny_model.decompress(strings[1:], (2, 3), 4)
    assert torch.allclose(alone, x_hat[1:], atol=1e-5)


def test_quality_orders_the_rate(tiny_model, images):
    sizes = [sum(len(s) for s in tiny_model.compress(images, q)[0]) for q in tiny_model.qualities]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]


def test_corrupt_strings_raise(tiny_model, images):
    from codec.errors import FormatError

    strings = tiny_model.compress(images[:1], 4)
    z, y = strings[0]
    with pytest.raises(FormatError):
        tiny_model.decompress([[z, y[: len(y) // 2]]], (2, 3), 4)
    with pytest.raises(ValueError, match="z string, y string"):
        tiny_model.decompress([[z]], (2, 3), 4)


def test_decoding_is_identical_across_thread_counts(tiny_model, images):
    strings, y_hat_enc = _encode(tiny_model, images[:1], 3)  # encoded with 1 thread (fixture)
    torch.set_num_threads(2)
    heads = tiny_model.decompress_heads(strings, (2, 3), 3)
    x_two = tiny_model.decode_pixels(tiny_model.synthesize(heads)[0])
    torch.set_num_threads(1)
    x_one = tiny_model.decompress(strings, (2, 3), 3)
    assert torch.equal(heads["y_hat"], y_hat_enc)
    assert torch.equal(to_uint8(x_two), to_uint8(x_one))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _snap_scales(path, table: torch.Tensor, nudge: float):
    """Wrap ``path.params``: a third of the scales become exactly a table level (times 1 + nudge)."""
    original = type(path).params.__get__(path)  # the unpatched method
    seen: list[torch.Tensor] = []

    def params(k, base):
        means, scales = original(k, base)
        levels = table.to(scales)[torch.arange(scales.numel(), device=scales.device) % len(table)]
        snapped = torch.where(
            torch.arange(scales.numel()).reshape(scales.shape) % 3 == 0, levels.reshape(scales.shape), scales
        )
        snapped = snapped * (1 + nudge)
        seen.append(snapped)
        return means, snapped

    return params, seen


def test_index_guard_absorbs_tiny_scale_differences(tiny_model, images, monkeypatch):
    """Scales that sit exactly on table boundaries at the encoder and 1e-12 above them at the decoder
    fall into other table levels; the stream's index escapes keep the decoded latents exact."""
    codec = tiny_model.codec
    table = codec.gaussian_conditional.scale_table.double()
    path = codec.entropy_path64()
    enc_params, enc_scales = _snap_scales(path, table, 0.0)
    monkeypatch.setattr(path, "params", enc_params)
    strings, y_hat_enc = _encode(tiny_model, images, 4)
    dec_params, dec_scales = _snap_scales(path, table, 1e-12)
    monkeypatch.setattr(path, "params", dec_params)
    heads = tiny_model.decompress_heads(strings, (2, 3), 4)
    assert codec.entropy_path64() is path  # the perturbed copy really was the one decoding
    boundaries = table.numpy()[:-1]
    flips = sum(
        int((scale_indexes(e.numpy(), boundaries) != scale_indexes(d.numpy(), boundaries)).sum())
        for e, d in zip(enc_scales, dec_scales, strict=True)
    )
    assert flips > 10  # the perturbation does move indexes: without the guard decoding would drift
    assert torch.equal(heads["y_hat"], y_hat_enc)


def test_float64_path_follows_weight_updates():
    """In training the float64 path follows the weights (a loaded ``Codec`` pins it: test_decode_only)."""
    from codec.config import get_config
    from codec.model import DiTIC

    torch.manual_seed(0)
    model = DiTIC(get_config("ditic-test")).eval()
    first = model.codec.entropy_path64()
    assert model.codec.entropy_path64() is first
    weight = model.codec.g_c.block[3].weight
    with torch.no_grad():
        weight.add_(0.0)  # an in-place update (as an optimizer step) bumps the tensor's version
    second = model.codec.entropy_path64()
    assert second is not first and second.g_c.block[3].weight.dtype == weight.dtype  # cast at each call
    assert np.array_equal(second.g_c.block[3].weight.numpy(), weight.detach().numpy())


def test_forward_rate_estimate_matches_the_coded_size(tiny_model):
    """The likelihoods training minimizes (eval mode: rounding) predict the real entropy-coded size."""
    torch.manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16), size=(256, 256), mode="bilinear") * 2 - 1
    x = x + 0.05 * torch.randn_like(x)
    with torch.no_grad():
        out = tiny_model(x, 4)
    estimate = sum(float(-torch.log2(p).sum()) for p in out.likelihoods.values())
    coded = 8 * sum(len(s) for s in tiny_model.compress(x, 4)[0])
    assert estimate > 1000  # a real amount of information, not an empty latent
    assert abs(coded - estimate) < 0.15 * estimate + 128
