"""Fuzzing the entropy decoders: any bytes give a FormatError or (rarely) a latent, never a crash or hang."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.entropy import EntropyBottleneck, GaussianConditional
from codec.errors import FormatError

FUZZ = settings(max_examples=200, deadline=None)


@pytest.fixture(scope="module")
def models() -> tuple[GaussianConditional, EntropyBottleneck]:
    gc, eb = GaussianConditional(), EntropyBottleneck(6)
    gc.update()
    eb.update()
    return gc, eb


def steps() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for lo in (0.01, 0.5, 50.0):
        scales = lo * torch.exp(torch.rand(2, 5, 7, generator=g) * 3)
        out.append((scales, torch.randn(2, 5, 7, generator=g)))
    return out


def decode(gc: GaussianConditional, data: bytes) -> None:
    decoder = gc.stream_decoder(data)
    for scales, means in steps():
        assert torch.isfinite(decoder.decode(scales, means)).all()
    decoder.finish()


def valid_stream(gc: GaussianConditional) -> bytes:
    encoder = gc.stream_encoder()
    for i, (scales, means) in enumerate(steps()):
        y = means + scales * torch.randn(scales.shape, generator=torch.Generator().manual_seed(i)) * 2
        y.view(-1)[i] = 1e9  # an escaped value in every step
        encoder.encode(y, scales, means)
    return encoder.finish()


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_gaussian_streams(models: tuple, data: bytes) -> None:
    try:
        decode(models[0], data)
    except FormatError:
        pass


@FUZZ
@given(st.data())
def test_mutated_gaussian_streams(models: tuple, data: st.DataObject) -> None:
    stream = bytearray(valid_stream(models[0]))
    for _ in range(data.draw(st.integers(1, 3))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(models[0], bytes(stream))
    except FormatError:
        pass


@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bottleneck_strings(models: tuple, data: bytes) -> None:
    try:
        z_hat = models[1].decompress([data], (3, 4))
        assert z_hat.shape == (1, 6, 3, 4) and torch.isfinite(z_hat).all()
    except FormatError:
        pass


def test_valid_stream_decodes(models: tuple) -> None:
    decode(models[0], valid_stream(models[0]))
