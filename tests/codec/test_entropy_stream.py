"""Gaussian stream coding: exact round trips, rate, broken streams, the index guard, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from codec.entropy import GaussianConditional
from codec.errors import ChecksumError, FormatError


@pytest.fixture(scope="module")
def gc() -> GaussianConditional:
    model = GaussianConditional()
    model.update()
    return model.eval()


def gaussian_latent(n: int, lo: float, hi: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.empty(n).uniform_(math.log(lo), math.log(hi), generator=g))
    means = torch.randn(n, generator=g) * 5
    return means + torch.randn(n, generator=g) * scales, scales, means


def encode_steps(gc: GaussianConditional, steps: list[tuple[torch.Tensor, ...]]) -> tuple[bytes, list]:
    encoder = gc.stream_encoder()
    y_hats = [encoder.encode(y, s, m) for y, s, m in steps]
    return encoder.finish(), y_hats


def decode_steps(gc: GaussianConditional, data: bytes, steps: list[tuple[torch.Tensor, ...]]) -> list:
    decoder = gc.stream_decoder(data)
    y_hats = [decoder.decode(s, m) for _, s, m in steps]
    decoder.finish()
    return y_hats


def assert_round_trip(gc: GaussianConditional, steps: list[tuple[torch.Tensor, ...]]) -> bytes:
    data, encoded = encode_steps(gc, steps)
    decoded = decode_steps(gc, data, steps)
    for (y, _, m), e, d in zip(steps, encoded, decoded, strict=True):
        assert d.shape == y.shape and d.dtype == m.dtype
        assert torch.equal(e, d)
        assert torch.equal(e, torch.round(y - m) + m)
    return data


def test_four_context_steps_round_trip_exactly(gc: GaussianConditional) -> None:
    ranges = [(0.01, 0.3), (0.3, 3.0), (3.0, 30.0), (30.0, 400.0)]
    steps = []
    for i, (lo, hi) in enumerate(ranges):
        y, s, m = gaussian_latent(2 * 80 * 6 * 4, lo, hi, seed=i)
        steps.append((y.view(2, 80, 6, 4), s.view(2, 80, 6, 4), m.view(2, 80, 6, 4)))
    assert_round_trip(gc, steps)


def test_outliers_of_any_magnitude_round_trip(gc: GaussianConditional) -> None:
    y = torch.tensor([0.0, 1e6, -1e12, 3e30, -7e300, 2.0**60 + 1, 0.4, -2500.0], dtype=torch.float64)
    scales = torch.tensor([0.11, 0.11, 256.0, 1.0, 0.5, 3.0, 1000.0, 1e-3], dtype=torch.float64)
    means = torch.zeros_like(y)
    assert_round_trip(gc, [(y, scales, means)])
    big32 = torch.tensor([3e38, -3e38, 1e20], dtype=torch.float32)
    assert_round_trip(gc, [(big32, torch.ones(3), torch.zeros(3))])


@pytest.mark.parametrize("shape", [(0,), (1, 0, 3), (1,), (1, 1, 1, 1), (3, 5)])
def test_degenerate_shapes(gc: GaussianConditional, shape: tuple[int, ...]) -> None:
    zeros = torch.zeros(shape)
    assert_round_trip(gc, [(zeros, torch.ones(shape), zeros)])
    y = torch.full(shape, 7.3)
    assert_round_trip(gc, [(y, torch.full(shape, 0.2), torch.full(shape, -0.25))])


def test_all_zero_costs_almost_nothing(gc: GaussianConditional) -> None:
    zeros = torch.zeros(320, 16, 16)
    data = assert_round_trip(gc, [(zeros, torch.full_like(zeros, 0.05), zeros)])
    assert len(data) <= 12  # ~82k symbols of 2^-16 surprise, plus the check and the final word


@pytest.mark.parametrize(("lo", "hi"), [(0.3, 3.0), (3.0, 30.0), (0.11, 256.0)])
def test_rate_matches_the_model(gc: GaussianConditional, lo: float, hi: float) -> None:
    y, s, m = gaussian_latent(20000, lo, hi, seed=7)
    data, (y_hat,) = encode_steps(gc, [(y, s, m)])
    ideal_bytes = -torch.log2(gc.likelihood(y_hat, s, m)).sum().item() / 8
    assert ideal_bytes * 0.995 < len(data) < ideal_bytes * 1.02


def test_every_truncation_is_an_error(gc: GaussianConditional) -> None:
    steps = [gaussian_latent(3000, 0.5, 20.0, seed=3)]
    data, _ = encode_steps(gc, steps)
    for cut in range(0, len(data), 4):
        with pytest.raises(FormatError):
            decode_steps(gc, data[:cut], steps)
    with pytest.raises(FormatError, match="whole number of words"):
        decode_steps(gc, data[:-1], steps)


def test_garbled_streams_are_errors(gc: GaussianConditional) -> None:
    steps = [gaussian_latent(3000, 0.5, 20.0, seed=4)]
    data, _ = encode_steps(gc, steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        pos = int(torch.randint(len(data), (1,), generator=g))
        garbled = bytearray(data)
        garbled[pos] ^= 1 << int(torch.randint(8, (1,), generator=g))
        with pytest.raises(FormatError):
            decode_steps(gc, bytes(garbled), steps)
    with pytest.raises(FormatError):
        decode_steps(gc, data + b"\x12\x34\x56\x78" * 3, steps)
    with pytest.raises(FormatError):
        decode_steps(gc, bytes(4 * 50), steps)


def test_wrong_step_sequence_is_detected(gc: GaussianConditional) -> None:
    steps = [gaussian_latent(500, 0.5, 5.0, seed=s) for s in range(2)]
    data, _ = encode_steps(gc, steps)
    with pytest.raises(ChecksumError):
        decode_steps(gc, data, steps[:1])


def test_same_bytes_every_time_and_any_thread_count(gc: GaussianConditional) -> None:
    steps = [gaussian_latent(5000, 0.11, 100.0, seed=5)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = encode_steps(gc, steps)
        torch.set_num_threads(2)
        two, _ = encode_steps(gc, steps)
    finally:
        torch.set_num_threads(threads)
    assert one == two == encode_steps(gc, steps)[0]


def test_decoding_is_device_dtype_agnostic(gc: GaussianConditional) -> None:
    y, s, m = gaussian_latent(1000, 0.5, 10.0, seed=6)
    data, (y_hat,) = encode_steps(gc, [(y.double(), s.double(), m.double())])
    decoder = gc.stream_decoder(data)
    out = decoder.decode(s.float(), m.float())
    decoder.finish()
    assert out.dtype == torch.float32
    assert torch.equal(out, (y_hat - m.double()).float() + m.float())


def test_bad_inputs_raise_clear_errors(gc: GaussianConditional) -> None:
    y, s, m = gaussian_latent(10, 0.5, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        gc.stream_encoder().encode(y, s.clone().fill_(float("nan")), m)
    with pytest.raises(ValueError, match="NaN"):
        gc.stream_encoder().encode(torch.full_like(y, float("inf")), s, m)
    with pytest.raises(ValueError, match="share a shape"):
        gc.stream_encoder().encode(y, s[:5], m)
    with pytest.raises(TypeError):
        gc.stream_decoder("not bytes")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="update"):
        GaussianConditional().stream_encoder()
