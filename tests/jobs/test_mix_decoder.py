"""tools/mix_decoder.py: another model's DC-AE decoder, or a weighted mix, in an otherwise unchanged model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from codec.config import get_config
from codec.errors import CheckpointError
from codec.model import DiTIC
from codec.weights import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("mix_decoder", ROOT / "tools" / "mix_decoder.py")
mix_decoder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mix_decoder)

WIDER = tuple(2 * w for w in get_config("ditic-test").vae.block_out_channels)


def _model(seed: int, encoder_of: DiTIC | None = None, **changes) -> DiTIC:
    """A random ditic-test model; with ``encoder_of``, that model's encoder (the same latent space)."""
    torch.manual_seed(seed)
    cfg = get_config("ditic-test")
    model = DiTIC(cfg.replace(**changes) if changes else cfg).eval()
    if encoder_of is not None:
        model.vae.encoder.load_state_dict(encoder_of.vae.encoder.state_dict())
    return model


def test_mix_sets_the_decoder_alone_and_records_it(tmp_path):
    base_path, donor_path = tmp_path / "base.safetensors", tmp_path / "donor.safetensors"
    out = tmp_path / "mix.safetensors"
    base_model = _model(0)
    base_id = save_checkpoint(base_model, base_path)
    donor_id = save_checkpoint(_model(1, encoder_of=base_model), donor_path)
    assert mix_decoder.main([str(base_path), str(donor_path), "--alpha", "0.25", "--out", str(out)]) == 0
    base, donor = load_checkpoint(base_path)[0], load_checkpoint(donor_path)[0]
    mixed, info = load_checkpoint(out)  # a normal checkpoint: its hash verifies
    assert info.model_id not in (base_id, donor_id)
    assert info.metadata["decoder_mix"] == f"0.75 x {base_id} + 0.25 x {donor_id}"
    b, d, m = base.state_dict(), donor.state_dict(), mixed.state_dict()
    decoder = [k for k in m if k.startswith("vae.decoder.") and m[k].is_floating_point()]
    assert decoder and any(not torch.equal(b[k], d[k]) for k in decoder)
    for k in decoder:
        assert torch.allclose(m[k].float(), 0.75 * b[k].float() + 0.25 * d[k].float(), atol=1e-6), k
    for k in m:  # the encoder, latent codec, DiT ...: the base's, bit for bit
        if not k.startswith("vae.decoder.") and k in b and not k.startswith("codec.gaussian_conditional"):
            assert torch.equal(m[k], b[k]), k


def test_alpha_one_is_the_donors_decoder_and_bad_input_is_refused():
    base = _model(0)
    donor = _model(1, encoder_of=base)
    assert mix_decoder.mix_decoder(base, donor, 1.0) is base
    for k, v in donor.vae.decoder.state_dict().items():
        assert torch.equal(base.vae.decoder.state_dict()[k], v), k
    with pytest.raises(ValueError, match="alpha"):
        mix_decoder.mix_decoder(base, donor, 1.5)
    with pytest.raises(CheckpointError, match="encoders differ"):  # another latent space
        mix_decoder.mix_decoder(base, _model(2), 0.5)
    wider = _model(3, encoder_of=base, **{"vae.decoder_block_out_channels": WIDER})
    with pytest.raises(CheckpointError, match="differ in shape"):
        mix_decoder.mix_decoder(base, wider, 0.5)


def test_alpha_one_swaps_in_a_decoder_of_other_widths(tmp_path):
    base = _model(0)
    wider = _model(3, encoder_of=base, **{"vae.decoder_block_out_channels": WIDER})
    swapped = mix_decoder.mix_decoder(base, wider, 1.0)
    assert swapped is not base and swapped.cfg.vae.decoder_block_out_channels == WIDER
    assert swapped.cfg.latent == base.cfg.latent
    s, b, w = swapped.state_dict(), base.state_dict(), wider.state_dict()
    for k in s:
        if k.startswith("vae.decoder."):
            assert torch.equal(s[k], w[k]), k
        elif not k.startswith("codec.gaussian_conditional"):
            assert torch.equal(s[k], b[k]), k
    path = tmp_path / "swapped.safetensors"
    save_checkpoint(swapped, path)
    loaded, info = load_checkpoint(path)
    assert info.config.vae.decoder_block_out_channels == WIDER
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():  # it runs end to end: the new decoder reads the old latent space
        assert loaded(x, 2).x_hat.shape == x.shape


def _half_like_a_shipped_file(model: DiTIC) -> DiTIC:
    """fp16 weights beside the entropy model's fp32 tensors, as an exported checkpoint holds them."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not name.startswith("codec."):
            t.data = t.data.half()
    return model


def test_fidelity_attaches_the_donors_decoder_as_a_second_one(tmp_path):
    base = _half_like_a_shipped_file(_model(0))
    donor = _half_like_a_shipped_file(_model(1, encoder_of=base))
    dtypes = {k: v.dtype for k, v in base.state_dict().items()}
    both = mix_decoder.attach_fidelity(base, donor)
    assert both.cfg.vae.fidelity_decoder and not base.cfg.vae.fidelity_decoder
    s, b, d = both.state_dict(), base.state_dict(), donor.state_dict()
    for k in s:
        if k.startswith("fidelity_decoder."):
            twin = "vae.decoder." + k[len("fidelity_decoder."):]
            assert torch.equal(s[k], d[twin]) and s[k].dtype == dtypes[twin], k
        else:  # the base's tensors, in the base's dtypes (the fp32 entropy model stays fp32)
            assert s[k].dtype == dtypes[k] and torch.equal(s[k], b[k]), k
    with pytest.raises(CheckpointError, match="encoders differ"):
        mix_decoder.attach_fidelity(base, _model(2))
    wider = _model(3, encoder_of=base, **{"vae.decoder_block_out_channels": WIDER})
    with pytest.raises(CheckpointError, match="shapes"):
        mix_decoder.attach_fidelity(base, wider)
    base_path, donor_path = tmp_path / "base.safetensors", tmp_path / "donor.safetensors"
    save_checkpoint(base, base_path)
    donor_id = save_checkpoint(donor, donor_path)
    out = tmp_path / "both.safetensors"
    assert mix_decoder.main([str(base_path), str(donor_path), "--fidelity", "--int8", "--out", str(out)]) == 0
    loaded, info = load_checkpoint(out)
    assert info.config.vae.fidelity_decoder
    assert info.metadata["fidelity_decoder"] == f"the decoder of {donor_id}"
    assert loaded.fidelity_decoder.conv_out.weight.dtype == torch.float16  # int8 on disk, fp16 loaded
    assert out.stat().st_size < base_path.stat().st_size + donor_path.stat().st_size / 2


def test_swapping_decoders_of_other_widths_keeps_the_dtypes():
    base = _half_like_a_shipped_file(_model(0))
    wider = _half_like_a_shipped_file(_model(3, encoder_of=base, **{"vae.decoder_block_out_channels": WIDER}))
    swapped = mix_decoder.mix_decoder(base, wider, 1.0)
    dtypes = {k: v.dtype for k, v in base.state_dict().items()}
    assert all(v.dtype == dtypes[k] for k, v in swapped.state_dict().items() if k in dtypes)
