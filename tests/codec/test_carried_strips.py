"""The split decode's local part in carried strips (``codec.autoencoder._carry_local``): each conv hands the
rows the next strip needs on to it instead of recomputing a halo, so every pixel is decoded once."""

from __future__ import annotations

import dataclasses
import math
import shutil

import pytest
import torch
from helpers import measured_cpu_peak, whole_and_channels_last
from test_streamed_decode import OFFICIAL_LIKE

from codec.autoencoder import (
    _STEPS,
    GIB,
    SplitPlan,
    _carry_local,
    _carry_starts,
    _global_part,
    _run_split,
    _Steps,
    build_vae,
    plan_for,
    run_plan,
    split_spec,
)
from codec.config import get_config


@pytest.fixture(scope="module", params=["ditic-test", "ditic-small", "official-like"])
def vae(request) -> torch.nn.Module:
    torch.manual_seed(21)
    cfg = OFFICIAL_LIKE if request.param == "official-like" else get_config(request.param)
    return build_vae(cfg).eval()


def _carried(vae: torch.nn.Module, z: torch.Tensor, count: int, per_call: int = 1, global_strips: int = 0
             ) -> SplitPlan:  # fmt: skip
    spec = split_spec(vae.decoder, z.dtype)
    starts = _carry_starts(z.shape[-2] * 32 // spec.scale, count, spec.halo)
    return SplitPlan(tuple(z.shape[-2:]), z.shape[0], spec, starts, per_call, 1.0, 4, global_strips,
                     carry=True)


def test_carried_strip_starts():
    """One height but the last, the first at least ``halo + 1`` rows, covering every row once."""
    for rows, count, halo in [(256, 13, 7), (256, 2, 7), (18, 5, 3), (10, 10, 3), (9, 50, 1), (4, 3, 7)]:
        starts = _carry_starts(rows, count, halo)
        ends = (*starts[1:], rows)
        heights = [b - a for a, b in zip(starts, ends, strict=True)]
        assert starts[0] == 0 and all(h > 0 for h in heights) and sum(heights) == rows
        assert heights[0] >= min(rows, halo + 1) and len(set(heights[1:-1])) <= 1 and len(starts) <= count
        assert heights[-1] <= max(heights[1:-1], default=heights[-1])


def test_carried_strips_equal_the_whole_decode(vae):
    """Within float rounding (fp32 on the CPU), with the global part whole or streamed; strip counts up to
    one row each, odd sizes, a batch in one call or two."""
    z = torch.randn(2, vae.config.latent_channels, 9, 7, generator=torch.Generator().manual_seed(1))
    rows = 9 * 32 // split_spec(vae.decoder).scale
    with torch.no_grad():
        whole = vae.decoder(z)
        for count, per_call, global_strips in [(2, 1, 0), (3, 2, 0), (5, 2, 2), (rows, 1, 0), (4, 1, 3)]:
            plan = _carried(vae, z, count, per_call, global_strips)
            assert plan.decoded_pixels == 2 * 9 * 7 * 32**2 and "rows carried" in plan.describe()
            out = run_plan(vae.decoder, z, plan)
            assert out.shape == whole.shape and (out - whole).abs().max() < 1e-5, (count, per_call)


def test_channels_last_carried_strips(vae):
    z = torch.randn(1, vae.config.latent_channels, 6, 10, generator=torch.Generator().manual_seed(2))
    plan = _carried(vae, z, 3)
    whole, out = whole_and_channels_last(vae.decoder, z, lambda d, cl: run_plan(d, cl, plan))
    assert (out - whole).abs().max() < 1e-4


def test_the_handed_on_rows_are_needed():
    """Zeroing what each strip hands on leaves the first strip's rows right and breaks the next ones."""
    torch.manual_seed(3)
    vae = build_vae(OFFICIAL_LIKE).eval()
    z = torch.randn(1, 8, 6, 5, generator=torch.Generator().manual_seed(3))
    plan = _carried(vae, z, 3)

    class Forgetting(_Steps):
        def __call__(self, name):  # noqa: ANN001, ANN204
            fn = super().__call__(name)
            if name != "carry":
                return fn
            return lambda d, stage, strip, states, last: fn(
                d, stage, strip, None if states is None else [torch.zeros_like(s) for s in states], last)

    _STEPS[vae.decoder] = Forgetting(False)
    try:
        with torch.no_grad():
            whole = vae.decoder(z)
            forgot = _run_split(vae.decoder, z, plan)
    finally:
        del _STEPS[vae.decoder]
    first_rows = (plan.strips[0][1] - plan.split.halo) * plan.split.scale  # complete after the first strip
    assert torch.equal(forgot[:, :, :first_rows], whole[:, :, :first_rows])
    assert (forgot[:, :, first_rows:] - whole[:, :, first_rows:]).abs().amax(dim=(0, 1, 3)).max() > 1e-3


def test_the_estimate_bounds_the_measured_peak_of_many_carried_strips():
    """The carried plan's estimate (the halo windows' one: both halos around a strip, one for the first)
    is above the measured CPU peak at every strip count the planner takes."""
    torch.manual_seed(4)
    vae = build_vae(OFFICIAL_LIKE).eval()
    z = torch.randn(1, 8, 12, 20, generator=torch.Generator().manual_seed(4))
    whole = plan_for(vae, z, None, budget_bytes=math.inf)
    for fraction in (0.8, 0.6, 0.4, 0.3):  # 3 to 23 strips
        plan = plan_for(vae, z, None, budget_bytes=fraction * whole.estimated_bytes)
        assert isinstance(plan, SplitPlan) and plan.carry and plan.tiles >= 2, plan.describe()
        with torch.no_grad():
            measured = measured_cpu_peak(lambda: run_plan(vae.decoder, z, plan))  # noqa: B023
        assert measured <= plan.estimated_bytes, (fraction, measured, plan.describe())


@pytest.mark.parametrize("gib", [1.0, 1.5, 2.0, 3.0])
def test_official_bf16_carried_split_decodes_each_pixel_once(gib):
    """ditic-official in bf16 at 2048² on a compiled decoder: within the budget, 1.00x the pixels where
    the halo windows decode 1.1-1.8x (in fewer, taller strips: a carried strip is estimated heavier)."""
    with torch.device("meta"):
        vae = build_vae(get_config("ditic-official"))
    vae.decoder.compile(dynamic=False)
    latent = (torch.Size((1, 32, 64, 64)), torch.bfloat16, torch.device("cuda"))
    carried = plan_for(vae, latent, None, budget_bytes=gib * GIB)
    halo = plan_for(vae, latent, None, budget_bytes=gib * GIB, kind="halo")
    assert carried.carry and not halo.carry and carried.global_strips >= 1
    assert carried.estimated_bytes <= gib * GIB and halo.estimated_bytes <= gib * GIB
    assert carried.decoded_pixels == 2048**2 < halo.decoded_pixels
    assert dataclasses.replace(carried, carry=False).decoded_pixels > carried.decoded_pixels


def test_budgets_too_tight_for_carried_strips_take_halo_windows():
    """A carried strip is estimated heavier than a halo window (``CARRY_FACTOR``): where none fits, the
    split still runs, in halo windows, before blended tiles."""
    with torch.device("meta"):
        vae = build_vae(get_config("ditic-official"))
    vae.decoder.compile(dynamic=False)
    plan = plan_for(vae, (torch.Size((1, 32, 64, 64)), torch.bfloat16, torch.device("cuda")), None,
                    budget_bytes=0.5 * GIB)  # fmt: skip
    assert isinstance(plan, SplitPlan) and not plan.carry and plan.estimated_bytes <= 0.5 * GIB


@pytest.mark.skipif(not shutil.which("g++"), reason="inductor on the CPU needs a C++ compiler")
def test_under_inductor_the_handed_on_rows_are_fresh_memory():
    """Compiled by inductor (as ``Codec(compile=True)`` does on a GPU), what a strip hands on owns its
    memory: inductor drops a ``clone()`` whose strides equal its source's, which a row slice's do, and
    the rows then kept each layer's whole strip buffer alive (11.6 GiB at 2048² on the H200). The
    compiled carried decode equals the eager one."""
    torch.manual_seed(9)
    vae = build_vae(OFFICIAL_LIKE).eval().to(memory_format=torch.channels_last)
    spec = split_spec(vae.decoder)
    z = torch.randn(1, 8, 6, 5, generator=torch.Generator().manual_seed(9))
    fn = torch.compile(_carry_local, dynamic=False)
    with torch.no_grad():
        features = _global_part(vae.decoder, spec.stage, z).contiguous(memory_format=torch.channels_last)
        compiled, states = fn(vae.decoder, spec.stage, features[:, :, :16], None, False)
        eager, expected = _carry_local(vae.decoder, spec.stage, features[:, :, :16], None, False)
    assert len(states) == len(expected) > 10
    for s in states:
        assert s.untyped_storage().nbytes() == s.numel() * s.element_size(), tuple(s.shape)
    assert (compiled - eager).abs().max() < 1e-4
    assert all((a - b).abs().max() < 1e-4 for a, b in zip(states, expected, strict=True))
