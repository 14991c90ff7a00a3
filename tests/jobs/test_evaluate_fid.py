"""FID pieces: patch grids, the Fréchet distance on Gaussians with known answers, and the real
InceptionV3 on a handful of patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.evaluate_fid import InceptionFeatures, count_patches, frechet_distance, patches, trace_sqrt_product

PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "photos"


def test_patch_grids_and_counts() -> None:
    image = np.arange(640 * 520 * 3, dtype=np.int64).reshape(520, 640, 3)
    cut = patches(image)
    # aligned grid: rows 0, 256 × cols 0, 256; shifted grid: row 128 × cols 128, 384
    assert len(cut) == count_patches(640, 520) == 2 * 2 + 1 * 2
    assert np.array_equal(cut[0], image[:256, :256])
    assert np.array_equal(cut[4], image[128:384, 128:384])
    assert count_patches(255, 4000) == 0
    assert patches(np.zeros((4000, 255, 3), np.uint8)).shape == (0, 256, 256, 3)
    assert count_patches(2560, 1600) == 10 * 6 + 9 * 5


def test_frechet_distance_closed_forms() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 6)) @ rng.normal(size=(6, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    centred = a - a.mean(0)
    # Σb = 4 Σa: tr(Σ + 4Σ − 2·2Σ) = tr(Σ)
    assert frechet_distance(centred, 2 * centred) == pytest.approx(np.trace(np.cov(centred, rowvar=False)))
    with pytest.raises(ValueError, match=">= 2 samples per side"):
        frechet_distance(a[:1], a)


def test_trace_of_root_is_the_same_in_sample_and_feature_space() -> None:
    rng = np.random.default_rng(1)
    for n_a, n_b, dim in ((12, 9, 40), (300, 250, 20)):
        a = rng.normal(size=(n_a, dim)) * rng.uniform(0.1, 3.0, dim)
        b = rng.normal(size=(n_b, dim)) + 0.3 * a[:1]
        a, b = a - a.mean(0), b - b.mean(0)
        by_samples = trace_sqrt_product(a, b, "samples")
        assert by_samples == pytest.approx(trace_sqrt_product(a, b, "features"), rel=1e-6)
        assert trace_sqrt_product(a, b) == pytest.approx(by_samples, rel=1e-6)
    with pytest.raises(ValueError, match="'samples' or 'features'"):
        trace_sqrt_product(a, b, "svd")


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    return InceptionFeatures(batch=4)


def test_inception_features_separate_clean_from_degraded(inception: InceptionFeatures) -> None:
    photo = np.asarray(Image.open(PHOTOS / "opencv__fruits.jpg").convert("RGB"))
    clean = patches(photo)[:2]
    blurred = np.stack([np.asarray(Image.fromarray(p).resize((32, 32)).resize((256, 256))) for p in clean])
    features = inception(np.concatenate([clean, blurred]))  # one call: TorchScript warm-up is slow
    f_clean, f_blur = features[:2], features[2:]
    assert features.shape == (4, 2048) and np.isfinite(features).all()
    scale = np.trace(np.cov(f_clean, rowvar=False))
    assert abs(frechet_distance(f_clean, f_clean)) < 1e-9 * scale
    assert frechet_distance(f_clean, f_blur) > 0.1 * scale
