"""The index guard: the decoder recomputes scales with tiny float differences and still decodes exactly."""

from __future__ import annotations

import math

import torch

from codec.entropy import GaussianConditional
from codec.errors import FormatError


def build(index_margin: float = 1e-7) -> GaussianConditional:
    model = GaussianConditional(index_margin=index_margin)
    model.update()
    return model


def latent(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    log_scales = torch.empty(n, dtype=torch.float64).uniform_(math.log(0.05), math.log(300), generator=g)
    scales = torch.exp(log_scales)
    means = torch.randn(n, generator=g, dtype=torch.float64)
    return means + torch.randn(n, generator=g, dtype=torch.float64) * scales, scales, means


def boundary_latent(gc: GaussianConditional) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scales exactly on every boundary between table levels, and 1e-12 to either side."""
    b = gc.scale_table[:-1].double()
    scales = torch.cat([b, b * (1 + 1e-12), b * (1 - 1e-12)]).repeat(4)
    g = torch.Generator().manual_seed(1)
    means = torch.randn(len(scales), generator=g, dtype=torch.float64)
    return means + torch.randn(len(scales), generator=g, dtype=torch.float64) * scales * 3, scales, means


def perturb(scales: torch.Tensor, relative: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scales * (1 + relative * (2 * torch.rand(scales.shape, generator=g, dtype=torch.float64) - 1))


def round_trip(gc: GaussianConditional, y, enc_scales, dec_scales, means) -> tuple[bool, bytes]:  # noqa: ANN001
    encoder = gc.stream_encoder()
    y_hat = encoder.encode(y, enc_scales, means)
    data = encoder.finish()
    decoder = gc.stream_decoder(data)
    out = decoder.decode(dec_scales, means)
    decoder.finish()
    return torch.equal(out, y_hat), data


def test_perturbed_decoder_scales_decode_exactly() -> None:
    gc = build()
    y, scales, means = latent(50000, seed=2)
    for seed in range(3):
        ok, _ = round_trip(gc, y, scales, perturb(scales, 1e-10, seed), means)
        assert ok


def test_scales_on_boundaries_decode_exactly() -> None:
    gc = build()
    y, scales, means = boundary_latent(gc)
    # (1 + 1e-13) moves scales that sit exactly on a boundary up a level; (1 - 1e-11) moves those
    # just above a boundary down one: the decoder's own index is wrong there.
    for dec_scales in (perturb(scales, 1e-10, 0), scales * (1 + 1e-13), scales * (1 - 1e-11)):
        ok, _ = round_trip(gc, y, scales, dec_scales, means)
        assert ok


def test_without_the_guard_boundary_scales_break() -> None:
    """The control: with no margin the same perturbation corrupts the decode."""
    gc = build(index_margin=0.0)
    y, scales, means = boundary_latent(gc)
    for dec_scales in (scales * (1 + 1e-13), scales * (1 - 1e-11)):
        try:
            ok, _ = round_trip(gc, y, scales, dec_scales, means)
        except FormatError:
            ok = False
        assert not ok


def test_guard_costs_nothing_on_random_data() -> None:
    y, scales, means = latent(50000, seed=3)
    _, guarded = round_trip(build(), y, scales, scales, means)
    _, unguarded = round_trip(build(index_margin=0.0), y, scales, scales, means)
    assert abs(len(guarded) - len(unguarded)) <= 4


def test_guard_overhead_is_small_when_every_symbol_is_escaped() -> None:
    gc = build()
    y, scales, means = boundary_latent(gc)
    _, with_escapes = round_trip(gc, y, scales, scales, means)
    _, reference = round_trip(gc, y, scales * 1.01, scales * 1.01, means)  # far from any boundary
    per_symbol = (len(with_escapes) - len(reference)) / len(y)
    assert per_symbol < 6  # a position delta and a level, a few bytes each at worst
