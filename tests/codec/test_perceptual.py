"""ST-LPIPS (our torchvision-free networks) against values computed by the reference package.

The reference values come from ``stlpips-pytorch`` 0.0.2 itself, run once in a throwaway venv with
torchvision (``tests/codec/data/make_stlpips_reference.py`` says how); the inputs are the PNGs
next to them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codec.errors import CheckpointError, InputImageError
from codec.perceptual import MIN_SIDE, STLPIPS, save_weights, to_unit_range, weights_path

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "stlpips_reference.json").read_text())


def load(name: str) -> torch.Tensor:
    array = np.asarray(Image.open(DATA / "stlpips" / name).convert("RGB"))
    return to_unit_range(torch.from_numpy(array.copy()).permute(2, 0, 1)[None])


@pytest.fixture(scope="module", params=["alex", "vgg"])
def model(request) -> STLPIPS:
    return STLPIPS(request.param)


@pytest.mark.parametrize("pair", sorted(REFERENCE["pairs"]))
def test_matches_reference_package(model: STLPIPS, pair: str) -> None:
    case = REFERENCE["pairs"][pair]
    with torch.no_grad():
        ours = model(load(case["x0"]), load(case["x1"]))
    assert ours.shape == (1,)
    assert ours.item() == pytest.approx(case[model.net], abs=1e-5, rel=1e-5)


def test_batch_equals_single_items(model: STLPIPS) -> None:
    x0 = torch.cat([load("fruits.png"), load("fruits.png")])
    x1 = torch.cat([load("fruits_q10.png"), load("fruits_shift.png")])
    with torch.no_grad():
        batched = model(x0, x1)
    expected = [REFERENCE["pairs"][p][model.net] for p in ("fruits_jpeg_q10", "fruits_shift_1px")]
    assert batched.tolist() == pytest.approx(expected, abs=1e-5)


def test_vgg_gradient_matches_reference() -> None:
    ref = REFERENCE["gradient"]
    model = STLPIPS(ref["net"])
    x1 = load("fruits_q10.png").requires_grad_(True)
    model(load("fruits.png"), x1).sum().backward()
    grad = x1.grad[0]
    assert grad.abs().sum().item() == pytest.approx(ref["l1"], rel=1e-4)
    for probe, value in ref["probes"].items():
        c, h, w = map(int, probe.split(","))
        assert grad[c, h, w].item() == pytest.approx(value, rel=1e-3, abs=1e-8)
    assert all(p.grad is None for p in model.parameters()), "the metric's own weights must stay frozen"


def test_shift_tolerance_beats_compression_artifacts(model: STLPIPS) -> None:
    pairs = REFERENCE["pairs"]
    with torch.no_grad():
        shift = model(load("fruits.png"), load("fruits_shift.png")).item()
        jpeg = model(load("fruits.png"), load("fruits_q10.png")).item()
    assert pairs["fruits_shift_1px"][model.net] == pytest.approx(shift, abs=1e-5)
    assert shift < 0.1 * jpeg


def test_too_small_and_mismatched_inputs(model: STLPIPS) -> None:
    side = MIN_SIDE[model.net]
    with torch.no_grad():
        model(torch.zeros(1, 3, side, side + 3), torch.zeros(1, 3, side, side + 3))
        with pytest.raises(InputImageError, match="needs both sides"):
            model(torch.zeros(1, 3, side - 1, 64), torch.zeros(1, 3, side - 1, 64))
        with pytest.raises(InputImageError, match="differ in shape"):
            model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 65))
        with pytest.raises(InputImageError, match=r"\(N, 3, H, W\)"):
            model(torch.zeros(3, 64, 64), torch.zeros(3, 64, 64))


def test_bad_weight_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="'alex' or 'vgg'"):
        STLPIPS("squeeze")
    wrong = tmp_path / "wrong.pth"
    torch.save(torch.load(weights_path("alex"), map_location="cpu", weights_only=True), wrong)
    with pytest.raises(CheckpointError, match="does not fit"):
        STLPIPS("vgg", weights=wrong)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        STLPIPS("alex", weights=tmp_path / "junk.pth")
    monkeypatch.setenv("DITIC_STLPIPS_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match="missing"):
        weights_path("alex")


def test_compact_half_precision_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_weights("alex", tmp_path / "alex_shift_tolerant.safetensors")
    assert path.stat().st_size < 0.6 * weights_path("alex").stat().st_size
    monkeypatch.setenv("DITIC_STLPIPS_DIR", str(tmp_path))
    assert weights_path("alex") == path
    case = REFERENCE["pairs"]["fruits_jpeg_q10"]
    with torch.no_grad():
        compact = STLPIPS("alex")(load(case["x0"]), load(case["x1"])).item()
    assert compact == pytest.approx(case["alex"], rel=2e-3)


def test_int8_copy_stays_close_as_a_training_loss(tmp_path: Path) -> None:
    """The int8 VGG copy (what a GPU run carries under the 64 MiB cap): a quarter of the file,
    distances within 0.5 % of the reference, and input gradients pointing the same way."""
    path = save_weights("vgg", tmp_path / "vgg_shift_tolerant.safetensors", torch.int8)
    assert path.stat().st_size < 0.3 * weights_path("vgg").stat().st_size
    full, small = STLPIPS("vgg"), STLPIPS("vgg", weights=path)
    for name in ("fruits_jpeg_q10", "fruits_shift_1px", "butterfly_noise"):
        case = REFERENCE["pairs"][name]
        with torch.no_grad():
            got = small(load(case["x0"]), load(case["x1"])).item()
        assert got == pytest.approx(case["vgg"], rel=5e-3), name
    case = REFERENCE["pairs"]["fruits_jpeg_q10"]
    grads = []
    for model in (full, small):
        x1 = load(case["x1"]).requires_grad_(True)
        model(load(case["x0"]), x1).sum().backward()
        grads.append(x1.grad.flatten())
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.98
    assert float(grads[1].norm() / grads[0].norm()) == pytest.approx(1.0, abs=0.02)
