"""The training objectives: each term checked against a value computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from codec.losses import (
    PatchDiscriminator,
    RateDistortionLoss,
    adaptive_gan_weight,
    bits_per_pixel,
    distillation_loss,
    hinge_d_loss,
    hinge_g_loss,
    latent_mse_loss,
    psnr,
    rate_lambdas,
)


def test_rate_lambdas_are_geometric_from_max_to_min():
    lam = rate_lambdas(4, 4.0, 0.25)
    assert lam[0] == pytest.approx(4.0) and lam[-1] == pytest.approx(0.25)
    ratios = [b / a for a, b in zip(lam, lam[1:], strict=False)]
    assert ratios == pytest.approx([ratios[0]] * 3)
    assert rate_lambdas(1) == [4.0]
    with pytest.raises(ValueError, match="num_qualities"):
        rate_lambdas(0)
    with pytest.raises(ValueError, match="lambda_min"):
        rate_lambdas(3, 0.1, 1.0)


def test_bits_per_pixel_counts_every_latent_per_sample():
    y = torch.full((2, 4, 3, 3), 0.5)  # 36 symbols of 1 bit each
    z = torch.full((2, 2, 1, 1), 0.25)  # 2 symbols of 2 bits each
    z[1] = 0.5
    bpp = bits_per_pixel({"y": y, "z": z}, num_pixels=64)
    assert bpp.tolist() == pytest.approx([(36 + 4) / 64, (36 + 2) / 64])
    with pytest.raises(ValueError, match="empty"):
        bits_per_pixel({}, 64)


def test_distillation_loss_is_a_cosine_margin():
    a = torch.randn(2, 8, 4, 4)
    assert distillation_loss(a, a).item() == pytest.approx(0.0)
    assert distillation_loss(a, -a).item() == pytest.approx(1.5)
    e0 = torch.zeros(1, 2, 1, 1)
    e0[:, 0] = 1
    e1 = torch.zeros(1, 2, 1, 1)
    e1[:, 1] = 1
    assert distillation_loss(e0, e1).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        distillation_loss(a, a[:, :4])


def test_distillation_gradient_does_not_reach_the_target():
    x0 = torch.randn(1, 4, 2, 2, requires_grad=True)
    y0 = torch.randn(1, 4, 2, 2, requires_grad=True)
    distillation_loss(x0, y0).backward()
    assert x0.grad is not None and y0.grad is None


def test_psnr_on_minus_one_to_one_images():
    x = torch.zeros(1, 3, 8, 8)
    x_hat = x + 0.2  # [0, 1] error 0.1 -> MSE 0.01 -> 20 dB
    assert psnr(x, x_hat).item() == pytest.approx(20.0, abs=1e-4)


def _output(x: torch.Tensor, p: float) -> dict:
    b = x.shape[0]
    return {
        "x_hat": x + 0.1,
        "likelihoods": {"y": torch.full((b, 4, 2, 2), p), "z": torch.ones(b, 1, 1, 1)},
        "latent_hat": torch.ones(b, 4, 2, 2),
        "latent_clean": -torch.ones(b, 4, 2, 2),
    }


def test_rate_distortion_loss_uses_each_samples_lambda():
    x = torch.zeros(2, 3, 4, 4)
    crit = RateDistortionLoss([2.0, 0.5], distill_weight=0.05)
    terms = crit(x, _output(x, 0.5), torch.tensor([1, 2]))  # 16 bits over 16 pixels -> 1 bpp each
    mse = 0.01
    expected = mse + (2.0 * 1.0 + 0.5 * 1.0) / 2 + 0.05 * 1.5
    assert terms.loss.item() == pytest.approx(expected, rel=1e-5)
    assert terms.bpp.tolist() == pytest.approx([1.0, 1.0])
    assert float(terms.parts["mse"]) == pytest.approx(mse)
    assert float(terms.parts["distill"]) == pytest.approx(1.5)
    single = crit(x, _output(x, 0.5), 2)
    assert single.loss.item() == pytest.approx(mse + 0.5 + 0.075, rel=1e-5)


def test_distill_margin_sets_where_the_hinge_acts():
    """ReLU(1 − margin − cos): at the release's 0.5 a latent at cos 0.9 pays nothing; at margin 0 it pays
    0.1. The criterion logs the mean cosine beside the term."""
    y0 = torch.zeros(1, 2, 1, 1)
    y0[:, 0] = 1.0
    x0 = torch.zeros(1, 2, 1, 1)
    x0[:, 0], x0[:, 1] = 0.9, math.sqrt(1 - 0.81)  # cos 0.9
    assert distillation_loss(x0, y0).item() == 0.0
    assert distillation_loss(x0, y0, margin=0.0).item() == pytest.approx(0.1, abs=1e-6)
    x = torch.zeros(1, 3, 4, 4)
    out = dict(_output(x, 0.5), latent_hat=x0.expand(1, 2, 2, 2), latent_clean=y0.expand(1, 2, 2, 2))
    release = RateDistortionLoss([1.0], distill_weight=0.05)(x, out, 1)
    strict = RateDistortionLoss([1.0], distill_weight=0.05, distill_margin=0.01)(x, out, 1)
    assert float(release.parts["distill"]) == 0.0 and float(strict.parts["distill"]) == pytest.approx(0.09)
    assert float(strict.parts["latent_cos"]) == pytest.approx(0.9, abs=1e-6)
    assert strict.loss.item() == pytest.approx(release.loss.item() + 0.05 * 0.09, rel=1e-5)
    with pytest.raises(ValueError, match="distill_margin"):
        RateDistortionLoss([1.0], distill_margin=-0.1)


def test_latent_mse_is_relative_to_the_target_and_off_by_default():
    y0 = torch.full((1, 4, 2, 2), 2.0)
    assert latent_mse_loss(y0 * 1.5, y0).item() == pytest.approx(0.25)  # (1.0)² / 2²
    assert latent_mse_loss(y0 * 10, y0 * 10).item() == 0.0
    x0 = torch.zeros(1, 4, 2, 2, requires_grad=True)
    target = y0.clone().requires_grad_(True)
    latent_mse_loss(x0, target).backward()
    assert x0.grad is not None and target.grad is None
    x = torch.zeros(2, 3, 4, 4)
    plain = RateDistortionLoss([2.0, 0.5], distill_weight=0.0)(x, _output(x, 0.5), 1)
    weighted = RateDistortionLoss([2.0, 0.5], distill_weight=0.0, latent_weight=0.5)(x, _output(x, 0.5), 1)
    assert "latent_mse" not in plain.parts and float(weighted.parts["latent_mse"]) == pytest.approx(4.0)
    assert weighted.loss.item() == pytest.approx(plain.loss.item() + 0.5 * 4.0, rel=1e-5)


def test_autoencoder_mode_pays_no_rate():
    x = torch.zeros(2, 3, 4, 4)
    terms = RateDistortionLoss([1.0])(x, _output(x, 0.5), None)
    assert terms.loss.item() == pytest.approx(0.01, rel=1e-5)
    assert "bpp" not in terms.parts and terms.bpp is None


def test_quality_outside_the_table_is_refused():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="quality must be in 1..2"):
        RateDistortionLoss([1.0, 0.5])(x, _output(x, 0.5), 3)


class _MeanAbs(nn.Module):
    """A stand-in perceptual distance with a known value: mean |a − b| per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.w * (a - b).abs()).flatten(1).mean(1).view(-1, 1, 1, 1)


def test_perceptual_term_is_weighted_and_frozen():
    x = torch.zeros(2, 3, 4, 4)
    p = _MeanAbs()
    terms = RateDistortionLoss([1.0], perceptual=p, perceptual_weight=2.0)(x, _output(x, 1.0), None)
    assert float(terms.parts["perceptual"]) == pytest.approx(0.1)
    assert terms.loss.item() == pytest.approx(0.01 + 2.0 * 0.1, rel=1e-5)
    assert not p.w.requires_grad


def test_patch_discriminator_and_hinge_losses():
    disc = PatchDiscriminator(width=16, num_layers=3)
    logits = disc(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1, 6, 6)
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.5 + 0.75))
    assert hinge_g_loss(fake).item() == pytest.approx(0.75)


def test_adaptive_gan_weight_is_a_gradient_norm_ratio():
    w = torch.ones(3, requires_grad=True)
    rd = (3.0 * w).sum()  # gradient norm 3·√3
    g = (w * 1.0).sum()  # gradient norm √3
    weight = adaptive_gan_weight(rd, g, w, scale=0.5)
    assert weight.item() == pytest.approx(0.5 * 3 * math.sqrt(3) / (math.sqrt(3) + 1e-4), rel=1e-4)
    assert not weight.requires_grad
