"""codec.fastforms: the DC-AE parts' compiled forms compute what diffusers' modules compute."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
import torch.nn.functional as F
from test_streamed_decode import OFFICIAL_LIKE

from codec import fastforms
from codec.autoencoder import SplitPlan, _carry_starts, build_vae, run_plan, split_spec
from codec.config import get_config


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", [_cl, lambda x: x])
def test_grouped_pointwise_equals_the_grouped_convolution(layout):
    gen = torch.Generator().manual_seed(1)
    x = layout(torch.randn(2, 24, 7, 9, generator=gen))
    w, b = torch.randn(36, 4, 1, 1, generator=gen), torch.randn(36, generator=gen)
    out = fastforms.grouped_pointwise(x, w, b, groups=6)
    assert out.shape == (2, 36, 7, 9)
    torch.testing.assert_close(out, F.conv2d(x, w, b, groups=6), rtol=1e-5, atol=1e-5)


def test_chunked_kv_sums_equal_diffusers_padded_product():
    gen = torch.Generator().manual_seed(2)
    key, value = torch.rand(2, 4, 8, 1024, generator=gen), torch.randn(2, 4, 8, 1024, generator=gen)
    reference = torch.matmul(F.pad(value, (0, 0, 0, 1), value=1), key.transpose(-1, -2))
    assert fastforms._chunk(1024) == fastforms.KV_CHUNK and fastforms._chunk(97) == 97
    for chunked in (False, True):
        torch.testing.assert_close(fastforms.kv_sums(key, value, chunked), reference, rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def decoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_vae(get_config("ditic-small")).decoder.eval()


def _latent() -> torch.Tensor:
    return _cl(torch.randn(1, 32, 8, 12, generator=torch.Generator().manual_seed(3)))


def test_use_fast_forms_swaps_the_parts_and_keeps_the_weights(decoder):
    fast = fastforms.use_fast_forms(copy.deepcopy(decoder))
    kinds = [type(m) for m in fast.modules()]
    assert fastforms.DepthwiseConv2d in kinds and fastforms.GroupedPointwiseConv2d in kinds
    processors = {type(m.processor) for m in fast.modules() if hasattr(m, "processor")}
    assert processors == {fastforms.LinearAttnProcessor}
    assert type(fast.norm_out) is fastforms.rms_norm_class()
    before, after = decoder.state_dict(), fast.state_dict()
    assert list(before) == list(after) and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():  # eager: cuDNN's / MKL-DNN's convolutions, the processor's products
        torch.testing.assert_close(fast(_latent()), decoder(_latent()), rtol=1e-5, atol=1e-5)


def test_fast_vit_off(decoder, monkeypatch):
    monkeypatch.setenv("DITIC_FAST_FORMS", "0")
    fast = fastforms.use_fast_forms(copy.deepcopy(decoder))
    assert all(type(a) is type(b) for a, b in zip(fast.modules(), decoder.modules(), strict=True))


def _traced(decoder: torch.nn.Module, latent: torch.Tensor) -> tuple[torch.Tensor, list]:
    """A fast-forms copy of ``decoder`` on ``latent`` through torch.compile, and the FX graphs dynamo
    traced (run as they are: no inductor)."""
    graphs = []

    def capture(gm, inputs):  # noqa: ANN001, ANN202
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    fast = fastforms.use_fast_forms(copy.deepcopy(decoder).to(memory_format=torch.channels_last))
    return torch.compile(fast, backend=capture, dynamic=False)(latent), graphs


def test_under_compile_the_fast_forms_replace_grouped_convolutions(decoder):
    """The graph dynamo traces holds no grouped convolution (depthwise: the custom op; grouped 1x1: bmm),
    the last norm is the custom op, and it computes the diffusers decoder's output."""
    with torch.no_grad():
        out, graphs = _traced(decoder, _latent())
        torch.testing.assert_close(out, decoder(_latent()), rtol=1e-5, atol=1e-5)
    convs = [n for g in graphs for n in g.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    groups = [n.args[6] if len(n.args) > 6 else n.kwargs.get("groups", 1) for n in convs]
    assert convs and all(g == 1 for g in groups), groups
    targets = [str(n.target) for g in graphs for n in g.graph.nodes]
    assert any("bmm" in t for t in targets)
    assert any("ditic.depthwise_conv" in t for t in targets) and any("ditic.rms_norm" in t for t in targets)
    torch._dynamo.reset()


@pytest.mark.skipif(not shutil.which("g++"), reason="inductor on the CPU needs a C++ compiler")
def test_inductor_compiles_the_fast_forms_faithfully():
    torch._dynamo.reset()
    torch.manual_seed(0)
    decoder = build_vae(get_config("ditic-test")).decoder.eval()
    fast = fastforms.use_fast_forms(copy.deepcopy(decoder).to(memory_format=torch.channels_last))
    latent = _cl(torch.randn(1, get_config("ditic-test").vae.latent_channels, 8, 12))
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(fast, dynamic=False)(latent), decoder(latent),
                                   rtol=1e-5, atol=2e-5)  # fmt: skip
    torch._dynamo.reset()


def test_the_dit_with_fast_forms_computes_the_same_step():
    """The SANA DiT's linear attention through DiTLinearAttnProcessor (and its Mix-FFN's depthwise conv
    through the custom op) gives diffusers' output, eager and traced."""
    from diffusers.models.attention_processor import SanaLinearAttnProcessor2_0

    from codec.dit import build_dit

    torch.manual_seed(0)
    cfg = get_config("ditic-test")
    dit = build_dit(cfg).eval()
    fast = fastforms.use_fast_forms(copy.deepcopy(dit))
    before = [type(m.processor) for m in dit.modules() if hasattr(m, "processor")]
    after = [type(m.processor) for m in fast.modules() if hasattr(m, "processor")]
    assert SanaLinearAttnProcessor2_0 in before and fastforms.DiTLinearAttnProcessor in after
    assert SanaLinearAttnProcessor2_0 not in after
    assert any(type(m) is fastforms.DepthwiseConv2d for m in fast.modules())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, cfg.vae.latent_channels, 8, 12, generator=gen)
    text = torch.randn(1, 7, cfg.dit.caption_channels, generator=gen)
    t = torch.tensor([999])
    with torch.no_grad():
        ref = dit(x, encoder_hidden_states=text, timestep=t, return_dict=False)[0]
        torch.testing.assert_close(fast(x, encoder_hidden_states=text, timestep=t, return_dict=False)[0], ref,
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        torch._dynamo.reset()
        traced = torch.compile(fast, backend="eager", dynamic=False)
        out = traced(x, encoder_hidden_states=text, timestep=t, return_dict=False)[0]
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch._dynamo.reset()


def test_nearest_upsample_conv_as_phase_convs():
    gen = torch.Generator().manual_seed(4)
    x, w, b = torch.randn(2, 6, 5, 7, generator=gen), torch.randn(4, 6, 3, 3, generator=gen), torch.randn(4)
    reference = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    torch.testing.assert_close(fastforms.upsample_conv(x, w, b), reference, rtol=1e-5, atol=1e-5)
    # rows i-1, i of the input make output rows 2i-1 and 2i
    pairs = fastforms.upsample_conv_pairs(x[:, :, 1:4], w, b)
    torch.testing.assert_close(pairs, reference[:, :, 3:7], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("counts", [(2, 0), (3, 2), (7, 0), (4, 3)])
def test_compiled_carried_strips_with_fast_forms_equal_the_whole_decode(monkeypatch, counts):
    """A compiled decoder with its fast forms (the upsample blocks' phase convs in carried strips: one low
    resolution row handed on) decodes what diffusers' whole decoder does. "eager" stands in for inductor."""
    monkeypatch.setattr("codec.autoencoder._COMPILE_OPTIONS", {"dynamic": False, "backend": "eager"})
    calls = []
    pairs = fastforms.upsample_conv_pairs
    monkeypatch.setattr(fastforms, "upsample_conv_pairs", lambda *a: calls.append(1) or pairs(*a))
    torch._dynamo.reset()
    torch.manual_seed(5)
    vae = build_vae(OFFICIAL_LIKE).eval()
    z = torch.randn(1, 8, 5, 7, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        whole = vae.decoder(z)
        fast = fastforms.use_fast_forms(copy.deepcopy(vae.decoder))
        fast.compile(dynamic=False)
        spec = split_spec(fast)
        count, global_strips = counts
        starts = _carry_starts(z.shape[-2] * 32 // spec.scale, count, spec.halo)
        plan = SplitPlan(tuple(z.shape[-2:]), 1, spec, starts, 1, 1.0, 4, global_strips, carry=True)
        out = run_plan(fast, z, plan)
    assert calls, "the carried strips did not take the phase convs"
    torch.testing.assert_close(out, whole, rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()


def test_with_grad_on_the_compiled_decoder_keeps_diffusers_modules(decoder):
    """The Triton ops have no backward: traced with grad on (training), the decoder keeps diffusers'
    convolutions, and gradients flow."""
    latent = _latent().requires_grad_(True)
    out, graphs = _traced(decoder, latent)
    out.square().mean().backward()
    assert latent.grad is not None and torch.isfinite(latent.grad).all()
    targets = [str(n.target) for g in graphs for n in g.graph.nodes]
    assert not any("ditic." in t for t in targets)
    torch._dynamo.reset()
