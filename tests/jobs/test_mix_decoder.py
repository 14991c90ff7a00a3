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


def _model(seed: int, **changes) -> DiTIC:
    torch.manual_seed(seed)
    cfg = get_config("ditic-test")
    return DiTIC(cfg.replace(**changes) if changes else cfg).eval()


def test_mix_sets_the_decoder_alone_and_records_it(tmp_path):
    base_path, donor_path = tmp_path / "base.safetensors", tmp_path / "donor.safetensors"
    out = tmp_path / "mix.safetensors"
    base_id = save_checkpoint(_model(0), base_path)
    donor_id = save_checkpoint(_model(1), donor_path)
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


def test_alpha_one_is_the_donors_decoder_and_bad_input_is_refused(tmp_path):
    base, donor = _model(0), _model(1)
    mix_decoder.mix_decoder(base, donor, 1.0)
    for k, v in donor.vae.decoder.state_dict().items():
        assert torch.equal(base.vae.decoder.state_dict()[k], v), k
    with pytest.raises(ValueError, match="alpha"):
        mix_decoder.mix_decoder(base, donor, 1.5)
    wider = _model(2, **{"vae.decoder_block_out_channels": tuple(2 * w for w in get_config("ditic-test")
                                                                   .vae.block_out_channels)})
    with pytest.raises(CheckpointError, match="differ in shape"):
        mix_decoder.mix_decoder(base, wider, 0.5)
