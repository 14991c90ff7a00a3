"""DC-AE decoding within a memory budget (codec.autoencoder): the tile plan, its batching, its estimate."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import measured_cpu_peak, whole_and_channels_last
from PIL import Image

from codec.autoencoder import (
    GIB,
    SplitPlan,
    TilePlan,
    _carry_starts,
    build_vae,
    decode_latent,
    decoder_bytes_per_pixel,
    fits_graphed,
    plan_decode,
    plan_for,
    run_plan,
    split_spec,
)
from codec.config import get_config
from codec.errors import LimitExceededError

pytestmark = pytest.mark.usefixtures("one_thread")

PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "photos"
OFFICIAL_BF16 = decoder_bytes_per_pixel(get_config("ditic-official").vae.diffusers_config(), torch.bfloat16)
SIZES = [(16, 16), (24, 40), (64, 64), (7, 200), (128, 128), (33, 95)]
BUDGETS_GIB = [0.5, 1.0, 2.0, 4.0, 8.0]


def _plan(size: tuple[int, int], budget_gib: float, overlap: int = 8, batch: int = 1) -> TilePlan | None:
    try:
        return plan_decode(size, batch=batch, bytes_per_pixel=OFFICIAL_BF16, budget_bytes=budget_gib * GIB,
                           overlap=overlap, out_itemsize=2)  # fmt: skip
    except LimitExceededError:
        return None


def _check_axis(starts: tuple[int, ...], size: int, length: int, overlap: int) -> None:
    assert starts[0] == 0 and starts[-1] + size == length  # first and last tile on the edges, no spill
    steps = np.diff(starts)
    assert (steps > 0).all() and (size - steps >= overlap).all()  # contiguous cover, overlap respected


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("budget_gib", BUDGETS_GIB)
@pytest.mark.parametrize("overlap", [4, 8])
def test_the_plan_covers_the_latent_exactly_with_the_overlap_within_the_budget(size, budget_gib, overlap):
    plan = _plan(size, budget_gib, overlap)
    if plan is None:
        return
    _check_axis(plan.rows, plan.tile[0], size[0], overlap)
    _check_axis(plan.cols, plan.tile[1], size[1], overlap)
    covered = np.zeros(size, dtype=int)
    for r in plan.rows:
        for c in plan.cols:
            covered[r : r + plan.tile[0], c : c + plan.tile[1]] += 1
    assert (covered >= 1).all()
    assert plan.estimated_bytes <= budget_gib * GIB
    assert 1 <= plan.per_call <= plan.tiles and plan.calls * plan.per_call >= plan.tiles


def _smallest_piece(length: int, count: int, overlap: int) -> int:
    """Independent re-derivation: the least tile side that lets ``count`` tiles share ``overlap``."""
    return length if count == 1 else math.ceil((length + (count - 1) * overlap) / count)


def _valid(side: int, count: int, length: int) -> bool:
    """A split is a plan: one tile, or tiles smaller than the latent and at least twice the overlap."""
    return count == 1 or min(16, length) <= side < length


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("budget_gib", BUDGETS_GIB)
def test_no_plan_with_fewer_tiles_fits(size, budget_gib):
    plan = _plan(size, budget_gib)
    if plan is None:
        return
    for n_rows in range(1, plan.tiles):
        for n_cols in range(1, plan.tiles // n_rows + 1):
            if n_rows * n_cols >= plan.tiles:
                continue
            th, tw = _smallest_piece(size[0], n_rows, 8), _smallest_piece(size[1], n_cols, 8)
            if not (_valid(th, n_rows, size[0]) and _valid(tw, n_cols, size[1])):
                continue
            rows, cols = tuple(range(n_rows)), tuple(range(n_cols))
            rival = TilePlan(size, 1, (th, tw), rows, cols, 8, 1, OFFICIAL_BF16, 2)
            assert rival.estimated_bytes > budget_gib * GIB, (n_rows, n_cols)


def test_strips_at_2048_where_they_fit_and_the_whole_image_where_it_fits():
    at_1024, at_2048, at_4096 = (_plan((s, s), 4.0) for s in (32, 64, 128))
    assert not at_1024.tiled and at_1024.per_call == 1
    assert (len(at_2048.rows), len(at_2048.cols), at_2048.tile) == (2, 1, (36, 64))  # two 1152x2048 strips
    assert at_2048.decoded_pixels == 2 * 36 * 64 * 32**2  # 12.5% recomputed, vs 125% for 3x3 tiles of 32
    assert at_4096.tiled and at_4096.estimated_bytes <= 4 * GIB
    assert _plan((64, 64), 8.0).tiles == 1  # the whole 2048² decode fits 8 GiB


def test_graphs_only_where_twice_the_plan_fits_the_budget():
    """A CUDA graph's pool holds ~2x the decoder's working set: 1024² is graphed under the default 4 GiB,
    a 2048² strip (est. ~2.3 GiB) is not; 8 GiB graphs the strips again."""
    at_1024, at_2048 = _plan((32, 32), 4.0), _plan((64, 64), 4.0)
    assert fits_graphed(at_1024, 4 * GIB) and at_1024.estimated_bytes > 1 * GIB
    assert not fits_graphed(at_2048, 4 * GIB) and at_2048.estimated_bytes <= 4 * GIB
    assert fits_graphed(at_2048, 8 * GIB) and not fits_graphed(at_1024, at_1024.estimated_bytes * 1.5)


def test_pieces_share_calls_when_the_budget_holds_several():
    one = _plan((64, 64), 3.0, batch=1)
    assert one.tiles > 1 and one.per_call == 1
    roomy = plan_decode((64, 64), batch=1, bytes_per_pixel=OFFICIAL_BF16, budget_bytes=30 * GIB, tile=28)
    assert roomy.tiles == 9 and roomy.per_call == 9 and roomy.calls == 1
    some = plan_decode((64, 64), batch=1, bytes_per_pixel=OFFICIAL_BF16, budget_bytes=7 * GIB, tile=28)
    assert 1 < some.per_call < 9 and some.calls * some.per_call - 9 < some.calls  # equal calls
    images = _plan((32, 32), 4.0, batch=5)  # five 1024² images: whole, in equal batches
    assert not images.tiled and (images.calls, images.per_call) == (3, 2)


def test_a_budget_too_small_is_a_clear_error_not_tiny_tiles():
    with pytest.raises(LimitExceededError, match="decode_memory_gib"):
        plan_decode((64, 64), bytes_per_pixel=OFFICIAL_BF16, budget_bytes=0.1 * GIB)
    with pytest.raises(ValueError, match="overlap"):
        plan_decode((64, 64), bytes_per_pixel=OFFICIAL_BF16, budget_bytes=GIB, overlap=0)
    smallest = _plan((64, 64), 0.6)
    assert smallest is not None and min(smallest.tile) >= 16  # never below twice the overlap


class _LocalDecoder(torch.nn.Module):
    """No spatial context (x32 nearest upsampling): any plan must reproduce the whole decode."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(z[:, :3], scale_factor=32, mode="nearest")


@pytest.mark.parametrize("budget_mib", [23, 26, 30])
def test_tiles_blend_seamlessly(budget_mib):
    vae = torch.nn.Module()
    vae.decoder = _LocalDecoder()
    z = torch.randn(2, 4, 21, 35)
    plan = plan_for(vae, z, True, budget_bytes=budget_mib * 2**20, bytes_per_pixel=4.0, overlap=3)
    assert plan.tiled and len(set(np.diff(plan.cols))) > 1  # uneven overlaps and three-tile junctions
    whole = decode_latent(vae, z, tiled=False)
    tiled = run_plan(vae.decoder, z, plan)
    assert tiled.shape == whole.shape == (2, 3, 672, 1120) and tiled.dtype == z.dtype
    assert torch.allclose(tiled, whole, atol=1e-6)


def _blended(vae: torch.nn.Module, z: torch.Tensor, budget_gib: float, overlap: int = 8) -> TilePlan:
    """The blended-tile plan for ``z`` (what ``plan_for`` picks for a decoder that cannot split)."""
    per_pixel = decoder_bytes_per_pixel(vae.config, z.dtype)
    return plan_decode(tuple(z.shape[-2:]), batch=z.shape[0], bytes_per_pixel=per_pixel,
                       budget_bytes=budget_gib * GIB, overlap=overlap)  # fmt: skip


def test_batched_tiles_equal_tiles_one_at_a_time(tiny_model):
    z = torch.randn(2, 8, 18, 26, generator=torch.Generator().manual_seed(3))
    plan = plan_for(tiny_model.vae, z, True, budget_bytes=GIB, tile=12, overlap=4)
    assert plan.tiles == 6 and plan.per_call == 12  # both images' six tiles in one call
    with torch.no_grad():
        together = run_plan(tiny_model.vae.decoder, z, plan)
        alone = run_plan(tiny_model.vae.decoder, z, dataclasses.replace(plan, per_call=1))
    assert torch.allclose(together, alone, rtol=0, atol=1e-5)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / mse)


@pytest.fixture(scope="module")
def photo_latent(tiny_codec) -> torch.Tensor:
    """The ditic-test DC-AE latent of a real photo at 1536x1024."""
    im = Image.open(PHOTOS / "opencv__fruits.jpg").convert("RGB").resize((1536, 1024))
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        return tiny_codec.model.vae.encoder(x)


def test_tiled_decode_stays_close_to_the_whole(tiny_model, photo_latent):
    vae = tiny_model.vae
    with torch.no_grad():
        whole = decode_latent(vae, photo_latent, tiled=False)
        strips = _blended(vae, photo_latent, 0.2)  # two 1024x896 tiles
        assert (len(strips.rows), len(strips.cols), strips.tile) == (1, 2, (32, 28))
        planned = run_plan(vae.decoder, photo_latent, strips)
        wider = _blended(vae, photo_latent, 0.2, overlap=16)  # the old 32/8 tiles
        assert wider.tile == (32, 32)
        widened = run_plan(vae.decoder, photo_latent, wider)
    # measured with the seeded untrained ditic-test weights: 37.5 dB and 41.3 dB (the old fixed tiles of
    # 32 latent px with a pinned last tile overlapped by 16 here and got 41.3 dB too)
    assert _psnr(planned, whole) >= 36.5
    assert _psnr(widened, whole) >= 40.5


@pytest.mark.parametrize("kind", ["whole", "split", "blended"])
def test_the_estimate_bounds_the_measured_peak(tiny_model, kind):
    vae = tiny_model.vae
    z = torch.randn(1, 8, 20, 28, generator=torch.Generator().manual_seed(1))
    if kind == "blended":
        plan = _blended(vae, z, 0.07)
    else:
        plan = plan_for(vae, z, kind == "split", budget_bytes=0.07 * GIB)
    assert plan.tiled == (kind != "whole") and isinstance(plan, SplitPlan) == (kind == "split")
    with torch.no_grad():
        measured = measured_cpu_peak(lambda: run_plan(vae.decoder, z, plan))
    assert measured <= plan.estimated_bytes <= 1.5 * measured


def test_automatic_mode_tiles_only_what_does_not_fit(tiny_model):
    """Whole where it fits; past the budget the split plan, whose strips never call the whole decoder."""
    calls = []
    hook = tiny_model.vae.decoder.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    z = torch.randn(1, 8, 20, 28)
    try:
        with torch.no_grad():
            default = decode_latent(tiny_model.vae, z)  # on the CPU: no budget unless asked
            fits = decode_latent(tiny_model.vae, z, budget_bytes=0.1 * GIB)
            tight = decode_latent(tiny_model.vae, z, budget_bytes=0.07 * GIB)
            forced = decode_latent(tiny_model.vae, z, tiled=False, budget_bytes=0.07 * GIB)
    finally:
        hook.remove()
    plan = plan_for(tiny_model.vae, z, None, budget_bytes=0.07 * GIB)
    assert calls == [(1, 8, 20, 28)] * 3 and isinstance(plan, SplitPlan) and plan.tiles >= 2
    assert torch.equal(default, fits) and torch.equal(default, forced)
    assert (tight - default).abs().max() < 1e-4  # exact up to rounding, unlike blended tiles


def test_codec_decodes_within_its_budget(photo):
    from codec.api import load_codec

    codec = load_codec("ditic-test", decode_memory_gib=0.08)
    whole = load_codec("ditic-test")
    assert whole.decode_plan(160, 96).tiles == 1
    plan = codec.decode_plan(1024, 640)
    assert plan.tiled and plan.estimated_bytes <= 0.08 * GIB
    assert "split at 1/32: " in plan.describe() and "strips of" in plan.describe()
    big = np.asarray(Image.fromarray(photo).resize((1024, 640)))
    payload = whole.encode([big])[0]
    tiled, untiled = codec.decode([payload])[0], whole.decode([payload])[0]
    assert tiled.size == untiled.size == (1024, 640)
    diff = np.asarray(tiled, dtype=float) - np.asarray(untiled, dtype=float)
    assert np.abs(diff).max() <= 1  # the split decode is exact: at most a rounding step in uint8
    calibrated = load_codec("ditic-test", decode_memory_gib=0.08, decode_bytes_per_pixel=40.0)
    assert calibrated.decode_plan(1024, 640).tiles < plan.tiles  # a measured, smaller cost: fewer tiles


# --- the split decode: global stages whole, local stages in strips with a halo ------------------------


@pytest.fixture(scope="module", params=["ditic-test", "ditic-small"])
def split_vae(request) -> torch.nn.Module:
    """A seeded, untrained DC-AE of a small config, float32, eval."""
    torch.manual_seed(5)
    return build_vae(get_config(request.param)).eval()


def _strips(vae: torch.nn.Module, z: torch.Tensor, count: int, per_call: int = 1) -> SplitPlan:
    spec = split_spec(vae.decoder, z.dtype)
    rows = z.shape[-2] * 32 // spec.scale
    starts = tuple(k * rows // count for k in range(count))
    return SplitPlan(tuple(z.shape[-2:]), z.shape[0], spec, starts, per_call, 1.0)


@pytest.mark.parametrize("name", ["ditic-test", "ditic-small", "ditic-official"])
def test_the_split_follows_the_block_types(name):
    """The local part is the run of ResBlock stages at the end; the halo is counted from the modules."""
    cfg = get_config(name).vae.diffusers_config()
    with torch.device("meta"):
        spec = split_spec(build_vae(get_config(name)).decoder)
    types = cfg["decoder_block_types"]
    assert spec.stage == types.index("EfficientViTBlock") and spec.scale == 2**spec.stage
    if name == "ditic-official":  # per stage 3 ResBlocks (6 convs) + an upsample conv; conv_out: 7 rows
        assert (spec.scale, spec.halo, spec.channels) == (8, 7, 512)


def test_the_split_decode_equals_the_whole_decode(split_vae):
    z = torch.randn(2, split_vae.config.latent_channels, 9, 13, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = split_vae.decoder(z)
        for count, per_call in [(2, 1), (3, 2), (5, 1), (7, 2)]:  # 5 and 7 divide neither 9 nor 18 rows
            plan = _strips(split_vae, z, count, per_call)
            assert len({b - a for a, b, _, _ in plan.strips}) <= 2
            split = run_plan(split_vae.decoder, z, plan)
            assert split.shape == whole.shape and (split - whole).abs().max() < 1e-4, (count, per_call)


def test_the_halo_is_needed(tiny_model):
    """One row less of halo than ``split_spec`` counts and the strips no longer match the whole decode."""
    vae = tiny_model.vae
    z = torch.randn(1, 8, 9, 7, generator=torch.Generator().manual_seed(4))
    plan = _strips(vae, z, 3)
    narrow = dataclasses.replace(plan, split=dataclasses.replace(plan.split, halo=plan.split.halo - 1))
    with torch.no_grad():
        whole = vae.decoder(z)
        assert (run_plan(vae.decoder, z, plan) - whole).abs().max() < 1e-4
        from codec.autoencoder import _run_split

        with pytest.raises(TypeError):  # run_plan checks the plan's halo against the decoder's
            run_plan(vae.decoder, z, narrow)
        monkey = pytest.MonkeyPatch()
        monkey.setattr("codec.autoencoder.split_spec", lambda d, dtype=None: narrow.split)
        try:
            assert (_run_split(vae.decoder, z, narrow) - whole).abs().max() > 1e-3
        finally:
            monkey.undo()


def test_channels_last_split_decode(split_vae):
    z = torch.randn(1, split_vae.config.latent_channels, 6, 10, generator=torch.Generator().manual_seed(6))
    plan = _strips(split_vae, z, 3)
    whole, split = whole_and_channels_last(split_vae.decoder, z, lambda d, cl: run_plan(d, cl, plan))
    assert (split - whole).abs().max() < 1e-4


def test_a_budget_past_the_whole_decode_picks_the_fewest_strips_that_fit(split_vae):
    z = torch.randn(2, split_vae.config.latent_channels, 20, 7, generator=torch.Generator().manual_seed(7))
    whole = plan_for(split_vae, z, None, budget_bytes=math.inf)
    budget = 0.7 * whole.estimated_bytes / whole.batch  # less than one image whole
    plan = plan_for(split_vae, z, None, budget_bytes=budget)
    assert isinstance(plan, SplitPlan) and plan.tiles >= 2 and plan.estimated_bytes <= budget
    rows = 20 * 32 // plan.split.scale
    for count in range(2, rows + 1):  # every plan of fewer (carried) strips is over the budget
        starts = _carry_starts(rows, count, plan.split.halo)
        if 2 <= len(starts) < plan.tiles:
            fewer = SplitPlan(plan.latent_size, 2, plan.split, starts, 1, plan.bytes_per_pixel, carry=True)
            assert fewer.estimated_bytes > budget, fewer.describe()
    # carried strips decode every pixel once; halo windows (the kind "halo") recompute their halos
    assert plan.carry and plan.decoded_pixels == 2 * 20 * 7 * 32**2 and "rows carried" in plan.describe()
    halo = plan_for(split_vae, z, None, budget_bytes=budget, kind="halo")
    assert not halo.carry and halo.decoded_pixels > plan.decoded_pixels and "halo rows" in halo.describe()
    assert not fits_graphed(plan, math.inf)  # the split runs the decoder's parts, never a graphed whole
    with torch.no_grad():
        assert (decode_latent(split_vae, z, budget_bytes=budget) - split_vae.decoder(z)).abs().max() < 1e-4


def test_blended_tiles_remain_where_the_split_cannot_apply(tiny_model):
    vae = tiny_model.vae
    z = torch.randn(1, 8, 20, 28)
    assert isinstance(plan_for(vae, z, True, budget_bytes=0.07 * GIB, tile=12), TilePlan)  # fixed tiles
    spec = split_spec(vae.decoder)
    heavy = dataclasses.replace(spec, global_bytes=1e4)  # the global part whole would not fit
    per_pixel = decoder_bytes_per_pixel(vae.config, torch.float32)
    kw = {"bytes_per_pixel": per_pixel, "budget_bytes": 0.07 * GIB}
    assert isinstance(plan_decode((20, 28), split=spec, **kw), SplitPlan)
    streamed = plan_decode((20, 28), split=heavy, **kw)  # streamed in row windows instead
    assert isinstance(streamed, SplitPlan) and streamed.global_strips >= 1
    unstreamable = dataclasses.replace(heavy, stream=None)
    assert isinstance(plan_decode((20, 28), split=unstreamable, **kw), TilePlan)
    with pytest.raises(TypeError, match="Decoder module"):  # a graph-replayed callable cannot split
        run_plan(lambda x: vae.decoder(x), z, plan_for(vae, z, True, budget_bytes=0.07 * GIB))


def test_a_compiled_decoder_streams_its_split_and_tiles_remain_selectable(monkeypatch):
    """``Codec(compile=True)`` compiles ``vae.decoder`` in place; its split runs the streamed global part
    and the local part through their own ``torch.compile`` (``_Steps``), so the plan streams the global
    part for it; the kind "tiles" (or ``DITIC_DECODE_PLAN=tiles``) keeps session 5's blended tiles."""
    from codec.autoencoder import SplitPlan, TilePlan, build_vae, plan_for
    from codec.config import get_config

    vae = build_vae(get_config("ditic-test")).eval()
    latent = (torch.Size((1, vae.config.latent_channels, 32, 32)), torch.float32, torch.device("cpu"))
    budget = 100 * 2**20  # 1024² does not fit whole: 2 split strips eager, 2x2 blended tiles compiled
    eager = plan_for(vae, latent, True, budget_bytes=budget)
    assert isinstance(eager, SplitPlan) and eager.global_strips == 0
    vae.decoder.compile(dynamic=False)  # sets the compiled call; nothing is traced until it runs
    plan = plan_for(vae, latent, True, budget_bytes=budget)
    assert isinstance(plan, SplitPlan) and plan.global_strips >= 1 and "streamed split" in plan.describe()
    assert isinstance(plan_for(vae, latent, True, budget_bytes=budget, kind="tiles"), TilePlan)
    monkeypatch.setenv("DITIC_DECODE_PLAN", "tiles")
    assert isinstance(plan_for(vae, latent, True, budget_bytes=budget), TilePlan)
