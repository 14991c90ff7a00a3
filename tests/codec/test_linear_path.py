"""The latent codec's optional linear path (``latent.linear_path``): the PCA code of the latent's 2x2
blocks beside g_a and the mean head (docs/TRAINING.md, session 6). Off in every named config; a checkpoint
turns it on in the config it carries, as the embedded ditic-small does since session 7."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codec.api import load_codec
from codec.config import get_config
from codec.model import DiTIC
from codec.weights import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _model() -> DiTIC:
    torch.manual_seed(0)
    return DiTIC(get_config("ditic-test").replace(**{"latent.linear_path": True})).eval()


def test_off_in_the_release_configs_on_in_the_shipped_small_one():
    for name in ("ditic-official", "ditic-test"):
        assert get_config(name).latent.linear_path is False
    assert get_config("ditic-small").latent.linear_path is True  # the shipped model's (session 7 on)
    assert not any("_linear." in key for key in DiTIC(get_config("ditic-test")).state_dict())


def test_init_sets_the_pca_code_which_reconstructs_a_rank_m_latent_exactly():
    model = _model()
    codec = model.codec
    rng = np.random.default_rng(1)
    width = codec.g_a_linear.in_channels  # 4 x latent channels = 32 for ditic-test, M = 16
    basis = torch.from_numpy(rng.standard_normal((codec.M, width))).float()
    blocks = torch.from_numpy(rng.standard_normal((6 * 4 * 4, codec.M))).float() @ basis + 3.0
    latents = F.pixel_shuffle(blocks.reshape(6, 4, 4, width).permute(0, 3, 1, 2), 2)  # (6, 8, 8, 8)
    codec.init_linear_path(latents)
    with torch.no_grad():
        back = F.pixel_shuffle(codec.g_s_linear(codec.g_a_linear(F.pixel_unshuffle(latents, 2))), 2)
    assert torch.allclose(back, latents, atol=1e-3)
    # a latent of full rank loses exactly what lies outside the top M components: something
    full = torch.randn(6, 8, 8, 8)
    codec.init_linear_path(full)
    with torch.no_grad():
        lost = F.pixel_shuffle(codec.g_s_linear(codec.g_a_linear(F.pixel_unshuffle(full, 2))), 2) - full
    assert 0.05 < float(lost.pow(2).sum() / full.pow(2).sum()) < 0.9
    with pytest.raises(ValueError, match="latent blocks"):
        codec.init_linear_path(torch.randn(1, 8, 4, 4))


def test_a_model_with_the_linear_path_codes_saves_and_loads(tmp_path: Path):
    model = _model()
    images = torch.rand(8, 3, 128, 192) * 2 - 1  # 8 x 2 x 3 latent blocks >= M = 16
    with torch.no_grad():
        model.codec.init_linear_path(model.encode_latent(images)[0])
    path = tmp_path / "linear.safetensors"
    save_checkpoint(model, path)
    codec = load_codec(path)
    assert codec.config.latent.linear_path
    assert torch.equal(codec.model.codec.g_s_linear.weight, model.codec.g_s_linear.weight)
    photo = ((images[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    payload = codec.encode([photo], quality=4)[0]
    decoded = np.asarray(codec.decode([payload])[0])
    assert decoded.shape == photo.shape
    # the decoder's mean head includes the linear path: decoding with it zeroed gives other pixels
    with torch.no_grad():
        codec.model.codec.g_s_linear.weight.zero_()
    assert not np.array_equal(np.asarray(codec.decode([payload])[0]), decoded)
