"""The streamed split decode (``codec.autoencoder``): the DC-AE decoder's global stages in row windows too,
the EfficientViT blocks' linear attention in two passes (key-value sums, then the outputs), exact."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import measured_cpu_peak, whole_and_channels_last

from codec.autoencoder import (
    GIB,
    SplitPlan,
    TilePlan,
    _global_part,
    _Steps,
    _steps_for,
    _stream_global,
    _windows,
    build_vae,
    decode_latent,
    plan_for,
    run_plan,
    split_spec,
)
from codec.config import CodecConfig, VAEConfig, get_config

# ditic-official's decoder in small: three ResBlock stages, then three EfficientViT stages (several blocks
# each, one 5x5 qkv scale), interpolate upsampling; narrow, so that it runs in milliseconds
OFFICIAL_LIKE = CodecConfig(name="official-like", vae=VAEConfig(
    block_out_channels=(8, 8, 16, 16, 32, 32),
    block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    encoder_layers_per_block=(1, 1, 1, 1, 1, 1),
    decoder_layers_per_block=(1, 1, 1, 2, 2, 2),
    qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    attention_head_dim=8,
    latent_channels=8,
))  # fmt: skip


@pytest.fixture(scope="module", params=["ditic-test", "official-like"])
def vae(request) -> torch.nn.Module:
    torch.manual_seed(11)
    cfg = OFFICIAL_LIKE if request.param == "official-like" else get_config(request.param)
    return build_vae(cfg).eval()


def _plan(vae: torch.nn.Module, z: torch.Tensor, local: int, global_strips: int, per_call: int = 1):
    spec = split_spec(vae.decoder, z.dtype)
    rows = z.shape[-2] * 32 // spec.scale
    starts = tuple(k * rows // local for k in range(min(local, rows)))
    return SplitPlan(tuple(z.shape[-2:]), z.shape[0], spec, starts, per_call, 1.0, 4, global_strips)


def test_windows_have_one_height_and_cover_the_halo():
    for rows, count, halo in [(9, 2, 3), (36, 5, 3), (7, 7, 2), (5, 3, 10), (256, 2, 7)]:
        windows = _windows(rows, count, halo)
        assert len({hi - lo for _, _, lo, hi in windows}) == 1
        assert [a for a, *_ in windows][0] == 0 and windows[-1][1] == rows
        for (a, b, lo, hi), nxt in zip(windows, [*windows[1:], None], strict=True):
            assert 0 <= lo <= max(0, a - halo) and min(rows, b + halo) <= hi <= rows
            assert nxt is None or nxt[0] == b


def test_the_official_like_decoder_splits_after_its_attention_stages(vae):
    spec = split_spec(vae.decoder)
    assert spec.stream is not None and spec.scale == 2**spec.stage
    if vae.config.decoder_block_types[3] == "EfficientViTBlock":  # official-like: at 1/8, as ditic-official
        assert spec.scale == 8 and sum(s.factor == 2 for s in spec.stream) == 2


def test_the_streamed_global_part_equals_the_whole_one(vae):
    spec = split_spec(vae.decoder)
    z = torch.randn(2, vae.config.latent_channels, 5, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = _global_part(vae.decoder, spec.stage, z)
        for strips in (1, 2, 3, 1000):  # 1000: a window per row, every window shifted at the edges
            streamed = _stream_global(vae.decoder, spec.stage, z, strips, _Steps(False))
            assert streamed.shape == whole.shape and (streamed - whole).abs().max() < 1e-4, strips


def test_the_streamed_split_decode_equals_the_whole_decode(vae):
    z = torch.randn(2, vae.config.latent_channels, 5, 7, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = vae.decoder(z)
        for local, global_strips, per_call in [(2, 1, 1), (3, 2, 2), (7, 50, 1)]:
            out = run_plan(vae.decoder, z, _plan(vae, z, local, global_strips, per_call))
            assert out.shape == whole.shape and (out - whole).abs().max() < 1e-4, (local, global_strips)


def test_the_attention_sums_are_global():
    """Leaving one window's key-value sums out changes every row: the two passes are needed."""
    torch.manual_seed(3)
    vae = build_vae(OFFICIAL_LIKE).eval()
    spec = split_spec(vae.decoder)
    z = torch.randn(1, 8, 6, 7, generator=torch.Generator().manual_seed(3))

    class Dropping(_Steps):
        def __call__(self, name):  # noqa: ANN001, ANN204
            fn = super().__call__(name)
            if name != "sums":
                return fn
            return lambda block, window, mask: fn(block, window, mask * (mask.sum() > 3))  # drops short ones

    with torch.no_grad():
        whole = _global_part(vae.decoder, spec.stage, z)
        dropped = _stream_global(vae.decoder, spec.stage, z, 5, Dropping(False))
    assert (dropped - whole).abs().amax(dim=(0, 1, 3)).min() > 1e-4


def test_tiny_images_take_the_quadratic_branch_whole():
    """Where a stage has no more pixels than a head has channels, diffusers attends quadratically: that
    block runs whole, the rest streams, and the decode stays exact."""
    torch.manual_seed(4)
    vae = build_vae(OFFICIAL_LIKE).eval()
    z = torch.randn(1, 8, 2, 3, generator=torch.Generator().manual_seed(4))  # 6 px <= 8 at 1/32
    with torch.no_grad():
        out = run_plan(vae.decoder, z, _plan(vae, z, 3, 2))
        assert (out - vae.decoder(z)).abs().max() < 1e-4


def test_channels_last_streamed_split(vae):
    z = torch.randn(1, vae.config.latent_channels, 4, 7, generator=torch.Generator().manual_seed(6))
    whole, out = whole_and_channels_last(vae.decoder, z, lambda d, cl: run_plan(d, cl, _plan(vae, z, 3, 3)))
    assert (out - whole).abs().max() < 1e-4


def test_the_streamed_estimate_bounds_the_measured_global_peak():
    """The streamed global part's estimate (``StreamStep``: whole inputs and outputs plus one window at
    the measured per-pixel working sets) is above its measured CPU peak, and not far above."""
    torch.manual_seed(7)
    cfg = CodecConfig(name="wider", vae=VAEConfig(**{**OFFICIAL_LIKE.vae.__dict__,
                                                      "block_out_channels": (8, 8, 16, 64, 64, 64),
                                                      "attention_head_dim": 32}))  # fmt: skip
    vae = build_vae(cfg).eval()
    z = torch.randn(1, 8, 8, 12, generator=torch.Generator().manual_seed(7))
    for strips in (2, 4):
        plan = _plan(vae, z, 4, strips)
        with torch.no_grad():
            measured = measured_cpu_peak(lambda: _stream_global(vae.decoder, plan.split.stage, z, strips,  # noqa: B023
                                                             _Steps(False)))  # fmt: skip
        assert measured <= plan.global_bytes <= 1.6 * measured, (strips, measured, plan.global_bytes)


@pytest.mark.parametrize("size", [2048, 4096])
def test_official_bf16_small_budgets_take_the_streamed_split(size):
    """ditic-official in bf16: under 1.5-2 GiB (and 0.5-1 GiB at 2048²) the plan is the exact split with
    its global part streamed, not blended tiles; the kind "tiles" still gives the tiles."""
    with torch.device("meta"):
        vae = build_vae(get_config("ditic-official"))
    latent = (torch.Size((1, 32, size // 32, size // 32)), torch.bfloat16, torch.device("cuda"))
    for gib in (0.5, 1.0, 1.5, 2.0) if size == 2048 else (1.5, 2.0, 4.0, 6.0):
        plan = plan_for(vae, latent, None, budget_bytes=gib * GIB)
        assert isinstance(plan, SplitPlan) and plan.global_strips >= 1, plan.describe()
        assert plan.estimated_bytes <= gib * GIB and "streamed split at 1/8: global" in plan.describe()
    assert isinstance(plan_for(vae, latent, None, budget_bytes=2 * GIB, kind="tiles"), TilePlan)
    whole_global = plan_for(vae, latent, None, budget_bytes=math.inf)
    assert not whole_global.tiled


def test_a_compiled_decoder_runs_the_steps_through_torch_compile(monkeypatch):
    """On a compiled decoder the split's steps go through ``torch.compile(dynamic=False)``: one graph
    per step function and shape, shared by every module and window (all windows of a step are one
    height), none added by a second decode; the result equals the whole decode. The "eager" backend
    stands in for inductor on the CPU."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.setattr("codec.autoencoder._COMPILE_OPTIONS", {"dynamic": False, "backend": "eager"})
    torch.manual_seed(8)
    vae = build_vae(OFFICIAL_LIKE).eval()
    z = torch.randn(1, 8, 5, 7, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        whole = vae.decoder(z)
    vae.decoder.compile(dynamic=False)  # as Codec(compile=True); the whole decoder is never called here
    plan = plan_for(vae, z, True, budget_bytes=0.6 * plan_for(vae, z, True, budget_bytes=math.inf)
                    .estimated_bytes)  # fmt: skip
    assert isinstance(plan, SplitPlan) and plan.global_strips >= 1 and plan.tiles >= 2
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        first = decode_latent(vae, z, True, budget_bytes=plan.estimated_bytes * 1.001)
        graphs = counters["stats"]["unique_graphs"]
        again = decode_latent(vae, z, True, budget_bytes=plan.estimated_bytes * 1.001)
    assert counters["stats"]["unique_graphs"] == graphs
    # sums + apply per attention stage (3), one per upsample shape (2), three of the carried local part
    # (the first strip, the ones between, the last); ResBlocks none here
    assert plan.carry and 0 < graphs <= 3 * 2 + 2 + 3
    assert (first - whole).abs().max() < 1e-4 and torch.equal(first, again)
    assert _steps_for(vae.decoder).compiled and "_ditic" not in str(vae.decoder.state_dict().keys())
