"""Entropy models: release layout, likelihoods, training behaviour, factorized-prior coding."""

from __future__ import annotations

import json

import pytest
import torch

from codec.entropy import EntropyBottleneck, GaussianConditional
from codec.errors import FormatError
from tests.conftest import SHARED

SHAPES = SHARED / "reference" / "official_ditic_state_dict_shapes.json"


def release_shapes(prefix: str) -> dict[str, list[int]]:
    if not SHAPES.is_file():
        pytest.skip(f"{SHAPES} not found")
    shapes = json.loads(SHAPES.read_text())
    return {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}


def our_shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_layout_matches_the_release_after_update() -> None:
    eb, gc = EntropyBottleneck(160), GaussianConditional()
    eb.update()
    gc.update()
    assert our_shapes(eb) == release_shapes("codec.entropy_bottleneck.")
    assert our_shapes(gc) == release_shapes("codec.gaussian_conditional.")


def test_load_accepts_resized_cdf_tables() -> None:
    trained = EntropyBottleneck(8)
    with torch.no_grad():
        trained.quantiles.copy_(torch.tensor([-30.0, 0.5, 25.0]).repeat(8, 1, 1))
    trained.update()
    fresh = EntropyBottleneck(8)
    fresh.update()
    z = torch.randn(1, 8, 4, 4) * 10
    assert fresh.compress(z) != trained.compress(z)  # its own tables, now cached
    fresh.load_state_dict(trained.state_dict())
    assert fresh._quantized_cdf.shape == trained._quantized_cdf.shape
    assert fresh.compress(z) == trained.compress(z)  # the cache follows the loaded tables
    gc = GaussianConditional()
    gc.load_state_dict(GaussianConditional().state_dict())  # empty tables load too
    assert gc._offset.numel() == 0


def test_update_only_when_needed() -> None:
    eb = EntropyBottleneck(4)
    assert eb.update() is True
    assert eb.update() is False
    with torch.no_grad():
        eb.quantiles[:, 0, 2] += 5
    assert eb.update(force=True) is True
    assert int(eb._cdf_length.max()) == 23 + 5


def test_gaussian_likelihood_is_a_distribution_over_integers() -> None:
    gc = GaussianConditional().eval()
    k = torch.arange(-200, 201, dtype=torch.float64)
    for scale in (0.3, 1.0, 17.0):
        p = gc.likelihood(k + 0.25, torch.full_like(k, scale), torch.full_like(k, 0.25))
        assert p.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_gaussian_forward_modes() -> None:
    gc = GaussianConditional()
    y = torch.randn(2, 8, 4, 4, requires_grad=True)
    scales, means = torch.rand(2, 8, 4, 4) + 0.5, torch.randn(2, 8, 4, 4)
    y_noisy, _ = gc.train()(y, scales, means)
    assert (y_noisy - y).abs().max() <= 0.5 and not torch.equal(y_noisy, torch.round(y_noisy))
    y_hat, likelihoods = gc.eval()(y, scales, means)
    assert torch.allclose(y_hat, torch.round(y - means) + means)
    (likelihoods.log().sum() + y_hat.sum()).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0  # straight-through rounding


def test_bottleneck_forward_and_aux_loss() -> None:
    torch.manual_seed(0)
    eb = EntropyBottleneck(4)
    z = torch.randn(2, 4, 5, 3) * 3
    z_hat, likelihoods = eb.train()(z)
    assert z_hat.shape == likelihoods.shape == z.shape
    assert ((z_hat - z).abs() <= 0.5).all() and (likelihoods > 0).all() and (likelihoods <= 1).all()
    optimizer = torch.optim.Adam([eb.quantiles], lr=0.1)
    before = eb.aux_loss().item()
    for _ in range(20):
        optimizer.zero_grad()
        eb.aux_loss().backward()
        optimizer.step()
    assert eb.aux_loss().item() < before


def test_bottleneck_codes_what_forward_quantizes() -> None:
    torch.manual_seed(1)
    eb = EntropyBottleneck(16).eval()
    with torch.no_grad():
        eb.quantiles[:, 0, 1] = torch.randn(16)
    eb.update()
    z = torch.randn(3, 16, 4, 5) * 4
    z[0, 0, 0, 0], z[1, 3, 2, 1] = 1e9, -12345.6  # outside every table: escaped
    strings = eb.compress(z)
    assert len(strings) == 3
    z_hat = eb.decompress(strings, (4, 5))
    assert torch.equal(z_hat, eb(z)[0])
    _, likelihoods = eb(z)
    ideal = -torch.log2(likelihoods[2]).sum().item() / 8
    assert len(strings[2]) < ideal * 1.1 + 8


def test_bottleneck_rejects_bad_input() -> None:
    eb = EntropyBottleneck(4)
    with pytest.raises(RuntimeError, match="update"):
        eb.compress(torch.zeros(1, 4, 2, 2))
    eb.update()
    with pytest.raises(ValueError, match="shape"):
        eb.compress(torch.zeros(1, 5, 2, 2))
    strings = eb.compress(torch.randn(1, 4, 2, 2) * 3)
    with pytest.raises(FormatError):
        eb.decompress([strings[0][:-4]], (2, 2))
    with pytest.raises(FormatError):
        eb.decompress([strings[0]], (3, 2))
