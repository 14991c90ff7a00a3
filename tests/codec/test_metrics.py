"""PSNR, MS-SSIM and bpp on cases whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from codec.errors import InputImageError
from codec.metrics import MS_SSIM_MIN_SIDE, as_tensor, bits_per_pixel, ms_ssim, psnr


def photo_like(seed: int, h: int = 192, w: int = 256) -> np.ndarray:
    """Smooth gradients plus mild noise: structure at every MS-SSIM scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 17.0)[..., None] * np.cos(yy / 23.0)[..., None] * np.array([1, 0.7, 0.4])
    return np.clip(base + rng.normal(0, 5, (h, w, 3)), 0, 255).astype(np.uint8)


def test_psnr_constant_offsets_and_identity() -> None:
    x = np.full((32, 48, 3), 100, np.uint8)
    assert psnr(x, x + 1).item() == pytest.approx(10 * math.log10(255**2 / 1.0), abs=1e-4)  # 48.13 dB
    assert psnr(x, x - 10).item() == pytest.approx(10 * math.log10(255**2 / 100.0), abs=1e-4)
    assert psnr(x, x).item() == math.inf


def test_psnr_is_per_image_over_all_channels() -> None:
    a = torch.full((2, 3, 16, 16), 50.0)
    b = a.clone()
    b[0, 0] += 3.0  # one channel off by 3: MSE = 9 / 3
    b[1] += 1.0  # every value off by 1: MSE = 1
    got = psnr(a, b)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx([10 * math.log10(255**2 / 3.0), 10 * math.log10(255**2)], abs=1e-4)


def test_inputs_in_every_form_agree() -> None:
    x, y = photo_like(0, 40, 50), photo_like(1, 40, 50)
    reference = psnr(x, y).item()
    assert psnr(Image.fromarray(x), Image.fromarray(y)).item() == pytest.approx(reference)
    chw = lambda a: torch.from_numpy(a).permute(2, 0, 1)
    assert psnr(chw(x), chw(y)).item() == reference
    assert psnr([x, x], [y, x]).tolist() == [reference, math.inf]
    assert as_tensor(x).shape == (1, 3, 40, 50) and as_tensor(x).dtype == torch.float32


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(InputImageError, match="differ in shape"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(InputImageError, match="H×W×3"):
        psnr(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(InputImageError, match="empty list"):
        as_tensor([])
    with pytest.raises(TypeError, match="str"):
        as_tensor("image.png")


def test_ms_ssim_of_constant_images_is_the_luminance_term() -> None:
    # Constant images: every contrast-structure term is 1 and the coarsest scale's luminance term
    # (2ab + C1) / (a² + b² + C1), C1 = (0.01·255)², is raised to the last scale weight 0.1333.
    a, b, c1 = 100.0, 120.0, (0.01 * 255) ** 2
    # 256 halves evenly 4 times (no zero-padded pooling); float64 keeps the flat variances exact
    x = torch.full((1, 3, 256, 256), a, dtype=torch.float64)
    y = torch.full((1, 3, 256, 256), b, dtype=torch.float64)
    expected = ((2 * a * b + c1) / (a * a + b * b + c1)) ** 0.1333
    assert ms_ssim(x, y).item() == pytest.approx(expected, abs=1e-5)


def test_ms_ssim_identity_and_monotone_in_noise() -> None:
    x = photo_like(2)
    rng = np.random.default_rng(3)
    values = [ms_ssim(x, x).item()]
    for sigma in (2, 8, 32):
        noisy = np.clip(x + rng.normal(0, sigma, x.shape), 0, 255).astype(np.uint8)
        values.append(ms_ssim(x, noisy).item())
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values == sorted(values, reverse=True) and values[-1] < 0.9


def test_ms_ssim_small_images_policy() -> None:
    side = MS_SSIM_MIN_SIDE - 1
    x, y = photo_like(4, side, 300), photo_like(5, side, 300)
    assert math.isnan(ms_ssim(x, y).item())
    ssim = ms_ssim(x, y, small="ssim").item()
    assert 0.0 < ssim < 1.0
    with pytest.raises(InputImageError, match=f">= {MS_SSIM_MIN_SIDE} px"):
        ms_ssim(x, y, small="error")
    x, y = photo_like(4, MS_SSIM_MIN_SIDE, 300), photo_like(5, MS_SSIM_MIN_SIDE, 300)
    assert not math.isnan(ms_ssim(x, y).item())


def test_bits_per_pixel() -> None:
    assert bits_per_pixel(1000, 100, 80) == 1.0
    assert bits_per_pixel(0, 10, 10) == 0.0
    with pytest.raises(InputImageError, match="positive"):
        bits_per_pixel(10, 0, 10)
    with pytest.raises(ValueError, match=">= 0"):
        bits_per_pixel(-1, 10, 10)
