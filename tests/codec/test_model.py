"""DiTIC forward (training), the flow step, the distillation loss and the ablation switches."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from codec import flow
from codec.config import FlowConfig, get_config
from codec.model import DiTIC, distillation_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**changes) -> DiTIC:
    torch.manual_seed(0)
    return DiTIC(get_config("ditic-test").replace(**changes))


def test_forward_shapes_and_training_outputs(tiny_model):
    model = _model().train()
    x = torch.rand(2, 3, 128, 192) * 2 - 1
    out = model(x, torch.tensor([1, 4]))
    assert out.x_hat.shape == x.shape and out.x_hat.abs().max() <= 1
    assert out.likelihoods["y"].shape == (2, 16, 2, 3)
    assert out.likelihoods["z"].shape == (2, 8, 1, 1)  # z pads y's 2x3 grid to 4x4 itself
    for p in out.likelihoods.values():
        assert bool(((p > 0) & (p <= 1)).all())
    assert out.latent_hat.shape == out.latent_clean.shape == out.latent_mean.shape == (2, 8, 4, 6)
    assert not out.latent_clean.requires_grad and out.latent_hat.requires_grad
    assert out["x_hat"] is out.x_hat and out.get("missing") is None


def test_losses_reach_the_codec_and_gains():
    model = _model().train()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    out = model(x, 2)
    rate = sum(-torch.log2(p).sum() for p in out.likelihoods.values())
    distil = model.distillation_loss(out.latent_hat, out.latent_clean)
    (out.x_hat.square().mean() + 1e-3 * rate + distil).backward()
    assert model.codec.g_a.pre1[0].weight.grad.abs().sum() > 0
    assert model.codec.gain.grad[1].abs().sum() > 0 and model.codec.gain.grad[0].abs().sum() == 0
    assert model.prompter.align[0].weight.grad.abs().sum() > 0


def test_distillation_loss_formula():
    a = torch.randn(2, 8, 3, 5)
    assert distillation_loss(a, a).item() == 0.0  # cos = 1 > margin
    assert distillation_loss(a, -a).item() == pytest.approx(0.05 * 1.5)
    b = torch.randn(2, 8, 3, 5)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    expected = 0.05 * torch.relu(0.5 - cos).mean().item()
    assert distillation_loss(a, b).item() == pytest.approx(expected, rel=1e-5)


def test_flow_step_values():
    cfg = FlowConfig()
    assert flow.flow_sigma(cfg) == pytest.approx(3 * 0.999 / (1 + 2 * 0.999))
    s = torch.tensor([0.0, 2.0, 3.99, 4.0, 50.0])
    assert torch.allclose(flow.variance_gain(s), torch.tensor([0.4, 0.7, 0.9985, 1.0, 1.0]))
    log_var = torch.tensor([2 * math.log(2.0), 100.0, -100.0])  # s = 2, clamped to e^10, e^-15
    assert torch.allclose(flow.decoded_std(log_var), torch.tensor([2.0, math.exp(10), math.exp(-15)]))
    mean, v, res = torch.randn(3, 4, 2, 2).unbind(0)
    lv = torch.zeros(4, 2, 2)  # s = 1 -> g = 0.55
    sigma = flow.flow_sigma(cfg)
    assert torch.allclose(flow.one_step(mean, lv, v, res, cfg), mean - sigma * 0.55 * v + res)
    plain = FlowConfig(variance_guidance=False)
    assert torch.allclose(flow.one_step(mean, lv, v, res, plain), mean - sigma * v + res)


def test_ablation_switches():
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    base = _model().eval()
    no_guidance = _model(**{"flow.variance_guidance": False}).eval()
    with torch.no_grad():
        assert not torch.allclose(base(x, 1).latent_hat, no_guidance(x, 1).latent_hat)
        prompt = torch.randn(2, 8, 2, 2)
        assert base.prompter(prompt).shape == (2, 8, 16)
        zero = _model(**{"prompter.mode": "zero"}).prompter
        assert zero(prompt).abs().sum() == 0
        learned = _model(**{"prompter.mode": "learned"}).prompter
        assert torch.equal(learned(prompt), learned(torch.randn(2, 8, 2, 2)))  # no image information
        assert not torch.equal(base.prompter(prompt), base.prompter(torch.randn(2, 8, 2, 2)))
    with pytest.raises(ValueError, match="prompter.mode"):
        get_config("ditic-test").replace(**{"prompter.mode": "text"})


def test_bad_inputs(tiny_model):
    with pytest.raises(ValueError, match="multiples of 64"):
        tiny_model(torch.zeros(1, 3, 64, 70))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="quality"):
        tiny_model(torch.zeros(1, 3, 64, 64), 5)
    with pytest.raises(ValueError, match="quality"):
        tiny_model.compress(torch.zeros(1, 3, 64, 64), 0)


def test_config_roundtrip_and_sizes():
    from codec.config import CodecConfig

    for name in ("ditic-official", "ditic-small", "ditic-test"):
        cfg = get_config(name)
        assert CodecConfig.from_dict(cfg.to_dict()) == cfg
    assert get_config("ditic-official").qualities == [1]
    assert len(get_config("ditic-small").qualities) >= 4
    with pytest.raises(ValueError, match="unknown config"):
        get_config("ditic-huge")
    with pytest.raises(ValueError, match="unknown"):
        CodecConfig.from_dict({"vae": {"widths": 3}})


def test_small_model_size():
    with torch.device("meta"):
        model = DiTIC(get_config("ditic-small"))
    n = sum(p.numel() for p in model.parameters())
    assert 5e6 < n <= 12e6  # fp16 weights <= 24 MiB (the cap), with the header


def test_context_width_narrows_the_context_model_and_codes_exactly():
    """latent.context_width (not the release's): the context model's adapters and g_c at that width,
    fewer parameters than the default 2M, and payloads that decode to what was coded (y_hat equal)."""
    from codec.config import CodecConfig

    default, narrow = _model(), _model(**{"latent.context_width": 8})  # ditic-test: M = 16, so 2M = 32
    count = lambda m: sum(p.numel() for p in m.codec.parameters())  # noqa: E731
    assert count(narrow) < count(default)
    width = lambda m: tuple(m.codec.g_c.block[-1].weight.shape[:2])  # noqa: E731
    assert width(narrow) == (8, 8) and width(default) == (32, 32)
    assert narrow.codec.adapter_in[0].branch1[0].weight.shape[0] == 8  # the adapters' middle width
    cfg = narrow.cfg
    assert CodecConfig.from_dict(cfg.to_dict()) == cfg and default.cfg.latent.context_width is None
    narrow.eval()
    narrow.update()  # the coding tables
    x = torch.rand(1, 3, 64, 128) * 2 - 1
    with torch.no_grad():
        latent, aux = narrow.encode_latent(x)
        strings, y_hat = narrow.codec.compress(latent, aux, 4)
        decoded, _ = narrow.codec.decompress_latent(strings, tuple(y_hat.shape[-2:]), torch.device("cpu"))
    assert torch.equal(decoded.cpu().to(y_hat.dtype), y_hat)
    with pytest.raises(ValueError, match="context_width"):
        get_config("ditic-test").replace(**{"latent.context_width": 4})


def test_the_named_small_config_is_the_shipped_models():
    """`ditic train --config ditic-small` trains the architecture that ships (session 14's M = 128, context
    width 64, linear path), not an older one: the named config equals the embedded weights' own, but for
    the second (fidelity) decoder that `tools/mix_decoder.py --fidelity` attaches after training (session
    16); training does not build one."""
    from codec.weights import read_checkpoint_info

    shipped = Path(__file__).resolve().parents[2] / "codec" / "weights" / "ditic-small.safetensors"
    if not shipped.is_file():
        pytest.skip("no embedded weights in this checkout")
    config = read_checkpoint_info(shipped).config
    trained = get_config("ditic-small")
    assert config.replace(**{"vae.fidelity_decoder": trained.vae.fidelity_decoder}) == trained
