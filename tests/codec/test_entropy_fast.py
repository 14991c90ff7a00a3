"""The fast (batched, vectorised) entropy-coding paths make exactly the bytes of the plain ones.

Three anchors: payload hashes the coder made before it was optimised (stored below, regenerate only on
purpose: a change means old archives stop decoding); a per-symbol reference coder written from the
format's description in this file; and, through the model, a per-image reference loop like the old
``LatentCodec`` (boolean masks, one ``encode``/``decode`` per image and step).
"""

from __future__ import annotations

import hashlib
import math
import zlib

import constriction
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.entropy import (
    EntropyBottleneck,
    GaussianConditional,
    GaussianStreamDecoder,
    GaussianStreamEncoder,
    scale_indexes,
)
from codec.entropy.coding import StepPositions, _levels
from codec.entropy.rangecoder import _Reader, _Writer
from codec.errors import FormatError

pytestmark = pytest.mark.usefixtures("one_thread")

# sha256 prefix and length of each payload, as the coder before issue 6's speed work made them
BEFORE = {
    "gaussian-0": ("3998d08cc12d4704907cb7b76814a80a", 17668),
    "gaussian-1": ("c2bf8369413df4ec00e00ced5cd56d51", 17632),
    "gaussian-2": ("f6b8ce7a2e6a61afd1b165a25fbee54b", 17548),
    "bottleneck-0": ("28258ccf6af1aac67d48c49077640bfb", 404),
    "bottleneck-1": ("87725e98b33c2136ee10b1dbf5337ad9", 396),
    "bottleneck-2": ("7cbe7c401e93a86ce6ea773e08ae2199", 392),
}


@pytest.fixture(scope="module")
def gc() -> GaussianConditional:
    model = GaussianConditional()
    model.update()
    return model


def stored_steps(seed: int, dtype: type = np.float64) -> list[tuple[torch.Tensor, ...]]:
    """Four steps (2, 80, 6, 4): a scale range each, a seventh of the scales on table boundaries
    (index escapes), outliers every 97th value (value escapes), one extreme value."""
    rng = np.random.default_rng(seed)
    table = GaussianConditional().scale_table.double().numpy()
    out = []
    for k, (lo, hi) in enumerate([(0.01, 0.3), (0.3, 3.0), (3.0, 30.0), (30.0, 400.0)]):
        n = 2 * 80 * 6 * 4
        s = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
        s[::7] = table[rng.integers(0, len(table), len(s[::7]))]
        s[3::11] *= 1 + 1e-9
        m = rng.normal(0, 5, n)
        y = m + rng.normal(0, 1, n) * s
        y[5::97] = rng.normal(0, 1e6, len(y[5::97]))
        y[0] = (-7e300 if dtype == np.float64 else -3e38) if k == 3 else y[0]
        out.append(tuple(torch.from_numpy(a.astype(dtype)).reshape(2, 80, 6, 4) for a in (y, s, m)))
    return out


def digest(data: bytes) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest()[:32], len(data)


@pytest.mark.parametrize(("seed", "dtype"), [(0, np.float64), (1, np.float64), (2, np.float32)])
def test_gaussian_payloads_are_those_of_the_old_coder(gc, seed: int, dtype: type) -> None:
    steps = stored_steps(seed, dtype)
    encoder = gc.stream_encoder()
    y_hats = [encoder.encode(y, s, m) for y, s, m in steps]
    data = encoder.finish()
    assert digest(data) == BEFORE[f"gaussian-{seed}"]
    decoder = gc.stream_decoder(data)
    for (_, s, m), y_hat in zip(steps, y_hats, strict=True):
        assert torch.equal(decoder.decode(s, m), y_hat)
    decoder.finish()


def test_bottleneck_payloads_are_those_of_the_old_coder() -> None:
    torch.manual_seed(5)
    eb = EntropyBottleneck(16)
    eb.update()
    z = torch.from_numpy(np.random.default_rng(9).normal(0, 4, (3, 16, 5, 7)))
    z[0, 0, 0, 0] = 1e9
    strings = eb.compress(z)
    assert [digest(s) for s in strings] == [BEFORE[f"bottleneck-{i}"] for i in range(3)]
    medians = eb.quantiles[:, 0, 1].detach().double().view(1, -1, 1, 1)
    assert torch.equal(eb.decompress(strings, (5, 7)).double(), torch.round(z - medians) + medians)


# ----------------------------------------------------------------------------- a per-symbol reference


def _digits(values: list[int]) -> list[int]:
    out = []
    for u in values:
        while u >= 1 << 15:
            out.append((u & 0x7FFF) | 0x8000)
            u >>= 15
        out.append(u)
    return out


def reference_stream(gc: GaussianConditional, steps: list[tuple[np.ndarray, ...]]) -> bytes:
    """The y stream format, symbol by symbol: per step a guard flag (+ count, position deltas, levels),
    the symbols table by table in position order, escaped values (zigzag, 15-bit digits); at the end a
    16-bit CRC of every coded value (float64 bytes)."""
    tables, boundaries = gc._coding_state()
    uniform = constriction.stream.model.Uniform(1 << 16)
    flag = constriction.stream.model.Categorical(np.array([65535.0, 1.0]), perfect=False)
    enc, crc = constriction.stream.queue.RangeEncoder(), 0
    log_b = np.log(boundaries)
    for y, s, m in steps:
        q = [float(v) + 0.0 for v in np.rint(y - m)]
        idx = [int(np.searchsorted(boundaries, v)) for v in s]
        near = [
            min(abs(math.log(max(v, 1e-300)) - log_b[min(max(i + d, 0), len(log_b) - 1)]) for d in (-1, 0))
            < gc.index_margin
            for v, i in zip(s, idx, strict=True)
        ]
        guarded = [i for i, n in enumerate(near) if n]
        enc.encode(np.array([int(bool(guarded))], dtype=np.int32), flag)
        if guarded:
            deltas = [guarded[0]] + [b - a for a, b in zip(guarded, guarded[1:], strict=False)]
            enc.encode(
                np.array(_digits([len(guarded), *deltas, *[idx[i] for i in guarded]]), np.int32), uniform
            )
        crc = zlib.crc32(np.array(q, dtype="<f8").tobytes(), crc)
        escapes = []
        for t, model in enumerate(tables.models):
            for v, i in zip(q, idx, strict=True):
                if i == t:
                    symbol = v - tables.offset[t]
                    regular = 0 <= symbol < tables.n_regular[t]
                    enc.encode(np.array([symbol if regular else tables.n_regular[t]], np.int32), model)
        for v, i in zip(q, idx, strict=True):
            if not 0 <= v - tables.offset[i] < tables.n_regular[i]:
                escapes.append(2 * int(v) if v >= 0 else -2 * int(v) - 1)
        if escapes:
            enc.encode(np.array(_digits(escapes), np.int32), uniform)
    enc.encode(np.array([crc & 0xFFFF], np.int32), uniform)
    return enc.get_compressed().astype("<u4").tobytes()


def decode_with_levels_in_torch(gc, strings: list[bytes], steps: list[tuple]) -> None:  # noqa: ANN001
    """The GPU decoder's path (table levels and y_hat in torch, beside the scales; here on the CPU)
    decodes ``steps`` ((B, n) y, scales, means) from ``strings`` as ``decode_batch`` does."""
    batch, n = steps[0][0].shape
    positions = StepPositions(torch.ones(1, max(n, 1), 1, 1)[:, :n])
    decoders = [gc.stream_decoder(x) for x in strings]
    boundaries = torch.from_numpy(decoders[0].boundaries)
    for y, s, m in steps:
        scales, means = (torch.from_numpy(a).reshape(batch, n, 1, 1) for a in (s, m))
        levels, means_k = positions.levels(scales, means, boundaries)
        assert levels.dtype == np.int32 and np.array_equal(levels, scale_indexes(s, decoders[0].boundaries))
        y_hat = positions.place(GaussianStreamDecoder.decode_levels(decoders, levels), means_k, means)
        assert torch.equal(y_hat, torch.from_numpy(np.rint(y - m) + m).reshape(scales.shape))
    for d in decoders:
        d.finish()


scale_values = st.one_of(
    st.floats(1e-3, 1e3),
    st.sampled_from(GaussianConditional().scale_table.double().tolist()),
    st.sampled_from([0.0, -1.0, 1e-300, 1e300, 0.11 * (1 + 1e-8), 256 * (1 - 1e-8)]),
)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_batched_steps_make_the_reference_bytes(gc, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 40))
    batch = data.draw(st.integers(1, 3))
    values = st.lists(st.floats(-1e7, 1e7), min_size=n, max_size=n)
    rows = [
        [np.array(data.draw(st.lists(scale_values, min_size=n, max_size=n))) for _ in range(batch)]
        for _ in range(2)
    ]
    steps = [
        (np.array([data.draw(values) for _ in range(batch)]), np.array(s), np.zeros((batch, n))) for s in rows
    ]
    encoders = [gc.stream_encoder() for _ in range(batch)]
    for y, s, m in steps:
        GaussianStreamEncoder.encode_batch(encoders, y, s, m)
    strings = [e.finish() for e in encoders]
    for b, data_b in enumerate(strings):
        assert data_b == reference_stream(gc, [(y[b], s[b], m[b]) for y, s, m in steps])
    decoders = [gc.stream_decoder(x) for x in strings]
    for y, s, m in steps:
        assert np.array_equal(GaussianStreamDecoder.decode_batch(decoders, s, m), np.rint(y - m) + m)
    for d in decoders:
        d.finish()
    decode_with_levels_in_torch(gc, strings, steps)


@settings(max_examples=50, deadline=None)
@given(st.lists(scale_values, max_size=60), st.sampled_from([0.0, 1e-7, 1e-3]))
def test_levels_follow_the_plain_rule(gc, scales: list[float], margin: float) -> None:
    s = np.array(scales, dtype=np.float64)
    boundaries = gc.scale_table.double().numpy()[:-1]
    plain = np.searchsorted(boundaries, s, side="left")
    log_s, log_b = np.log(np.maximum(s, 1e-300)), np.log(boundaries)
    near = np.minimum(*(np.abs(log_s - log_b[np.clip(plain + d, 0, len(log_b) - 1)]) for d in (-1, 0)))
    idx, flagged = _levels(s, boundaries, margin)
    assert np.array_equal(idx, plain) and np.array_equal(scale_indexes(s, boundaries), plain)
    assert np.array_equal(flagged, near < margin)


@pytest.mark.parametrize("boundaries", [[0.1, 0.2, 5.0, 5.5, 100.0], [2.0], [1.0, 1.0 + 1e-12, 3.0]])
def test_levels_are_exact_for_irregular_tables(boundaries: list[float]) -> None:
    b = np.array(boundaries)
    s = np.concatenate([b, np.nextafter(b, 0), np.nextafter(b, 1e9), np.geomspace(1e-3, 1e3, 500)])
    assert np.array_equal(scale_indexes(s, b), np.searchsorted(b, s, side="left"))


# ----------------------------------------------------------------------------- batches


def batch_round_trip(gc, steps: list[tuple]) -> None:  # noqa: ANN001
    """``steps`` ((B, n) y, scales, means) coded as a batch make each image's bytes coded alone, and
    decode back to round(y - means) + means by both decoding paths."""
    batch = [gc.stream_encoder() for _ in range(len(steps[0][0]))]
    for y, s, m in steps:
        GaussianStreamEncoder.encode_batch(batch, y, s, m)
    strings = [e.finish() for e in batch]
    for b in range(len(batch)):
        alone = gc.stream_encoder()
        for y, s, m in steps:
            alone.encode(torch.from_numpy(y[b]), torch.from_numpy(s[b]), torch.from_numpy(m[b]))
        assert strings[b] == alone.finish()
    decoders = [gc.stream_decoder(x) for x in strings]
    for y, s, m in steps:
        assert np.array_equal(GaussianStreamDecoder.decode_batch(decoders, s, m), np.rint(y - m) + m)
    for d in decoders:
        d.finish()
    decode_with_levels_in_torch(gc, strings, steps)


def test_a_batch_of_different_images_codes_each_as_alone(gc) -> None:
    """Image 0 has value escapes, image 1 index escapes (boundary scales), image 2 neither."""
    rng = np.random.default_rng(3)
    table = gc.scale_table.double().numpy()
    steps = []
    for _ in range(4):
        s = np.exp(rng.uniform(-2, 4, (3, 500)))
        s[1, ::5] = table[rng.integers(0, 63, 100)]
        m = rng.normal(0, 3, (3, 500))
        y = m + rng.normal(0, 1, (3, 500)) * s
        y[0, ::50] = 1e12
        steps.append((y, s, m))
    batch_round_trip(gc, steps)


def test_images_of_one_table_each_take_the_flat_order(gc) -> None:
    """Each image's scales on one level (an untrained model: all below the first), a different level
    per image, value escapes in one: no sort (``_Groups.order`` None), the same bytes as one by one."""
    from codec.entropy.rangecoder import _Groups

    rng = np.random.default_rng(5)
    table = gc.scale_table.double().numpy()
    s = np.repeat([[0.01], [table[20]], [table[40] * 0.999]], 3000, axis=1)
    steps = []
    for _ in range(2):
        m = rng.normal(0, 3, s.shape)
        y = m + rng.normal(0, 1, s.shape) * np.maximum(s, 0.5)
        y[1, ::100] = -1e9
        steps.append((y, s, m))
    idx = scale_indexes(s, gc.stream_decoder(b"").boundaries)
    groups = _Groups.of(idx, len(table))
    assert groups.order is None and groups.table.tolist() == [0, 20, 40]
    assert groups.count.tolist() == [3000] * 3
    mixed = idx.copy()
    mixed[1, 7] = 3
    assert _Groups.of(mixed, len(table)).order is not None  # an image of two tables: sorted
    batch_round_trip(gc, steps)


def test_one_corrupt_stream_in_a_batch_is_an_error(gc) -> None:
    rng = np.random.default_rng(4)
    s, m = np.exp(rng.uniform(-1, 3, (2, 2000))), rng.normal(0, 2, (2, 2000))
    y = m + rng.normal(0, 1, (2, 2000)) * s
    encoders = [gc.stream_encoder() for _ in range(2)]
    GaussianStreamEncoder.encode_batch(encoders, y, s, m)
    good, bad = (e.finish() for e in encoders)
    for broken in (bad[: len(bad) // 2], bad[:8] + bytes(len(bad) - 8), bad + b"\0\0\0\1"):
        with pytest.raises(FormatError):
            decoders = [gc.stream_decoder(good), gc.stream_decoder(broken)]
            GaussianStreamDecoder.decode_batch(decoders, s, m)
            for d in decoders:
                d.finish()


def test_batch_arguments_are_checked(gc) -> None:
    encoders = [gc.stream_encoder() for _ in range(2)]
    y = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"must be \(2, n\)"):
        GaussianStreamEncoder.encode_batch(encoders, y[:1], y[:1], y[:1])
    with pytest.raises(ValueError, match="NaN"):
        GaussianStreamEncoder.encode_batch(encoders, y, np.full((2, 5), np.nan), y)
    other = GaussianConditional(index_margin=0.0)
    other.update()
    with pytest.raises(ValueError, match="one entropy model"):
        GaussianStreamEncoder.encode_batch([encoders[0], other.stream_encoder()], y, y + 1, y)
    with pytest.raises(ValueError, match=r"must be \(1, n\)"):
        GaussianStreamDecoder.decode_batch([gc.stream_decoder(b"")], y, y)
    # the levels path: a scale that is not finite comes back as level -1 and is the same error
    positions, scales = StepPositions(torch.ones(1, 5, 1, 1)), torch.ones(2, 5, 1, 1, dtype=torch.float64)
    boundaries = torch.from_numpy(gc.stream_decoder(b"").boundaries)
    for bad in (math.nan, math.inf, -math.inf):
        scales[1, 3] = bad
        levels, _ = positions.levels(scales, scales, boundaries)
        assert levels[1, 3] == -1 and (np.delete(levels, 8) >= 0).all()
        with pytest.raises(ValueError, match="NaN"):
            GaussianStreamDecoder.decode_levels([gc.stream_decoder(b"")] * 2, levels)
    with pytest.raises(ValueError, match=r"must be \(1, n\)"):
        GaussianStreamDecoder.decode_levels([gc.stream_decoder(b"")], levels)
    with pytest.raises(ValueError, match="out of range"):
        GaussianStreamDecoder.decode_levels([gc.stream_decoder(b"")], np.full((1, 5), 10**6))


def test_table_cache_follows_buffer_changes() -> None:
    model = GaussianConditional()
    model.update()
    first = model._coding_state()[0]
    assert model._coding_state()[0] is first  # unchanged buffers: no rebuild
    with torch.no_grad():
        model.scale_table.mul_(2)
    model.update(force=True)  # new buffers
    rebuilt = model._coding_state()[0]
    assert rebuilt is not first and rebuilt.n_regular[0] > first.n_regular[0]
    reference = GaussianConditional()
    reference.update()
    model.load_state_dict(reference.state_dict())  # copied in place into buffers of another shape
    assert model._coding_state()[0].n_regular.tolist() == first.n_regular.tolist()
    with torch.no_grad():
        model._offset.copy_(reference._offset - 1)  # in place, same tensor
    assert (model._coding_state()[0].offset == first.offset - 1).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**200), max_size=30))
def test_escape_digits_round_trip(values: list[int]) -> None:
    writer = _Writer()
    writer.uints(values)
    writer.uints([7])
    reader = _Reader(writer.finish())
    assert reader.uints(len(values)) == values and reader.uints(1) == [7]


def test_an_endless_escape_value_is_an_error() -> None:
    writer = _Writer()
    writer.enc.encode(np.full(80, 0x8001, dtype=np.int32), constriction.stream.model.Uniform(1 << 16))
    with pytest.raises(FormatError, match="too long"):
        _Reader(writer.finish()).uints(1)


# ----------------------------------------------------------------------------- through the model


def reference_compress(codec, latent: torch.Tensor, aux: torch.Tensor, quality: int) -> tuple:  # noqa: ANN001
    """The latent codec's coding loop before the speed work: per image, boolean masks, Tensor API."""
    y, z = codec.analysis(latent, aux, quality)
    z_strings = codec.entropy_bottleneck.compress(z.float())
    z_hat = codec.entropy_bottleneck.decompress(z_strings, z.shape[-2:]).double()
    y64 = y.double()
    coders = [codec.gaussian_conditional.stream_encoder() for _ in range(y.shape[0])]

    def encode(k: int, means: torch.Tensor, scales: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[0].bool()
        out = torch.zeros_like(means)
        for b, coder in enumerate(coders):
            out[b][m] = coder.encode(y64[b][m], scales[b][m], means[b][m])
        return out

    y_hat, _ = codec.entropy_path64().run(z_hat, y.shape[-2:], encode)
    return [[zs, c.finish()] for zs, c in zip(z_strings, coders, strict=True)], y_hat


@pytest.mark.parametrize(("y_size", "batch"), [((1, 1), 1), ((3, 5), 3), ((5, 2), 2)])
def test_model_payloads_match_the_per_image_reference(
    tiny_model, y_size: tuple[int, int], batch: int
) -> None:
    codec = tiny_model.codec
    cfg = tiny_model.cfg
    g = torch.Generator().manual_seed(y_size[0] * 10 + batch)
    h, w = y_size
    latent = torch.randn(batch, cfg.vae.latent_channels, 2 * h, 2 * w, generator=g) * 3
    aux = torch.randn(batch, cfg.aux.M, 4 * h, 4 * w, generator=g) * 3
    for quality in (1, 4):
        strings, y_hat = codec.compress(latent, aux, quality)
        ref_strings, ref_y_hat = reference_compress(codec, latent, aux, quality)
        assert strings == ref_strings
        assert torch.equal(y_hat, ref_y_hat)
        for on_device in (False, True):  # True: the GPU decoder's levels and y_hat in torch (here on the CPU)
            codec.levels_on_device = on_device
            try:
                out = codec.decompress(strings, y_size, quality, torch.device("cpu"), torch.float32)
            finally:
                codec.levels_on_device = None
            assert torch.equal(out["y_hat"], y_hat)
        for b in range(batch):  # each image alone: the same strings (y_hat: the LRP net's float64 noise)
            alone, alone_y_hat = codec.compress(latent[b : b + 1], aux[b : b + 1], quality)
            assert alone == strings[b : b + 1]
            assert torch.allclose(alone_y_hat, y_hat[b : b + 1], rtol=0, atol=1e-12)


def test_step_positions_move_the_same_values_with_numpy_and_torch() -> None:
    """The GPU path (torch gather/scatter on the tensors' device), run here on the CPU."""
    from codec.latent import four_step_masks

    g = torch.Generator().manual_seed(0)
    pair = torch.randn(2, 16, 3, 5, generator=g, dtype=torch.float64)
    means, scales = pair.chunk(2, 1)  # views, as the parameter network's output
    y = torch.randn(2, 8, 3, 5, generator=g)
    for k, mask in enumerate(four_step_masks(8, 3, 5, torch.device("cpu"), torch.float64)):
        positions = StepPositions(mask)
        host = positions.gather(y, scales, means, torch_ops=False)
        on_device = positions.gather(y, scales, means, torch_ops=True)
        picked = mask[0].bool()
        for h, d, t in zip(host, on_device, (y, scales, means), strict=True):
            assert np.array_equal(h, d) and np.array_equal(h, t.double()[:, picked].numpy()), k
        values = np.random.default_rng(k).normal(size=host[0].shape)
        a, b = (positions.scatter(values, means, torch_ops=flag) for flag in (False, True))
        assert torch.equal(a, b) and a.shape == means.shape and a.dtype == torch.float64
        assert torch.equal(a[:, picked], torch.from_numpy(values)) and not a[:, ~picked].any()
