"""Full-reference quality metrics and the bit rate, in the conventions compression papers use.

Conventions (the ones CompressAI and the DiT-IC paper report):

* Images are RGB, **uint8 range 0–255**. Tensors are ``(N, 3, H, W)`` or ``(3, H, W)``; numpy
  arrays and PIL images are ``H×W×3``. Float inputs are taken as already on 0–255; computing is
  in float32 unless float64 tensors come in (MS-SSIM of near-flat images needs them to be exact).
* **PSNR** is computed per image over all three channels at once (``psnr-rgb``):
  ``10·log10(255² / MSE)``; identical images give ``+inf``. Averages over a data set are means of
  the per-image values, not PSNR of the pooled MSE.
* **MS-SSIM** is Wang et al. 2003 with the standard 5 scales, 11×11 Gaussian window (σ 1.5) and
  weights, via ``pytorch-msssim``, on 0–255. Five scales need the shorter side to exceed
  ``(11 − 1)·2⁴ = 160`` pixels; smaller images get NaN by default (``small="nan"``), plain
  single-scale SSIM on request (``small="ssim"``), or an error (``small="error"``).
* **bpp** is the whole payload in bits over the pixels of the original image (no padding).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from PIL import Image

from codec.errors import InputImageError

__all__ = [
    "MS_SSIM_MIN_SIDE",
    "as_tensor",
    "bits_per_pixel",
    "ms_ssim",
    "psnr",
]

MS_SSIM_MIN_SIDE = 161
"""The smallest side (pixels) for which 5-scale MS-SSIM with an 11×11 window is defined."""

ImageLike = torch.Tensor | np.ndarray | Image.Image
SmallPolicy = Literal["nan", "ssim", "error"]


def as_tensor(image: ImageLike | list[ImageLike]) -> torch.Tensor:
    """An image or a list of same-sized images as a float ``(N, 3, H, W)`` tensor on 0–255
    (float64 stays float64, everything else becomes float32)."""
    if isinstance(image, list):
        if not image:
            raise InputImageError("empty list of images")
        return torch.cat([as_tensor(one) for one in image])
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputImageError(f"expected an H×W×3 array, got shape {image.shape}")
        image = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a copy: inputs may be read-only
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a tensor, numpy array or PIL image, got {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputImageError(f"expected (N, 3, H, W) or (3, H, W), got shape {tuple(image.shape)}")
    return image if image.dtype == torch.float64 else image.float()


Images = ImageLike | list[ImageLike]


def _pair(x: Images, y: Images) -> tuple[torch.Tensor, torch.Tensor]:
    x_t, y_t = as_tensor(x), as_tensor(y)
    if x_t.shape != y_t.shape:
        raise InputImageError(f"images differ in shape: {tuple(x_t.shape)} vs {tuple(y_t.shape)}")
    if x_t.shape[-1] == 0 or x_t.shape[-2] == 0:
        raise InputImageError(f"empty image of shape {tuple(x_t.shape)}")
    return x_t, y_t


def psnr(x: Images, y: Images) -> torch.Tensor:
    """PSNR in dB per image, shape ``(N,)``, over RGB on 0–255 (``+inf`` where identical)."""
    x_t, y_t = _pair(x, y)
    mse = (x_t.double() - y_t.double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(255.0**2 / mse)).float()


def ms_ssim(x: Images, y: Images, small: SmallPolicy = "nan") -> torch.Tensor:
    """MS-SSIM per image, shape ``(N,)``, on 0–255; see the module notes for images ≤ 160 px."""
    from pytorch_msssim import ms_ssim as _ms_ssim
    from pytorch_msssim import ssim as _ssim

    x_t, y_t = _pair(x, y)
    side = min(x_t.shape[-2:])
    if side >= MS_SSIM_MIN_SIDE:
        return _ms_ssim(x_t, y_t, data_range=255.0, size_average=False)
    if small == "nan":
        return torch.full((x_t.shape[0],), math.nan)
    if small == "ssim" and side >= 11:
        return _ssim(x_t, y_t, data_range=255.0, size_average=False)
    raise InputImageError(
        f"MS-SSIM needs both sides >= {MS_SSIM_MIN_SIDE} px, got {x_t.shape[-1]}x{x_t.shape[-2]}"
        + (" (SSIM needs >= 11 px)" if small == "ssim" else "; pass small='nan' or small='ssim'")
    )


def bits_per_pixel(num_bytes: int | float, width: int, height: int) -> float:
    """Bits per pixel of a ``num_bytes`` payload for a ``width``×``height`` image."""
    if width <= 0 or height <= 0:
        raise InputImageError(f"image size must be positive, got {width}x{height}")
    if num_bytes < 0:
        raise ValueError(f"num_bytes must be >= 0, got {num_bytes}")
    return 8.0 * float(num_bytes) / (width * height)
