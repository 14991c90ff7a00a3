"""tools/gain_probe.py: a quality's gain scaled for a probe, coded for real, and put back."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from helpers import write_small_photos

from codec.api import load_codec

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gain_probe", ROOT / "tools" / "gain_probe.py")
gain_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gain_probe)


def test_finer_scales_one_quality_and_restores_it_even_on_error():
    model = load_codec("ditic-test", device="cpu").model.codec  # the latent codec holds the gains
    gain, inverse = model.gain.detach().clone(), model.inverse_gain.detach().clone()
    with gain_probe.finer(model, 2, 4.0):
        assert torch.allclose(model.gain[1], gain[1] * 4)
        assert torch.allclose(model.inverse_gain[1], inverse[1] / 4)
        assert torch.equal(model.gain[0], gain[0]) and torch.equal(model.gain[2], gain[2])
    assert torch.equal(model.gain, gain) and torch.equal(model.inverse_gain, inverse)
    with pytest.raises(RuntimeError), gain_probe.finer(model, 2, 4.0):
        raise RuntimeError("boom")
    assert torch.equal(model.gain, gain) and torch.equal(model.inverse_gain, inverse)


def test_a_finer_gain_spends_more_bits(tmp_path: Path):
    write_small_photos(tmp_path / "photos")
    out = tmp_path / "probe.json"
    args = ["ditic-test", "--data", str(tmp_path / "photos"), "--holdout", "2", "--crop", "64",
            "--quality", "1", "--factors", "1,8", "--out", str(out)]  # fmt: skip
    assert gain_probe.main(args) == 0
    result = json.loads(out.read_text())
    rows = result["factors"]
    assert set(rows) == {"1", "8"} and result["quality"] == 1 and len(result["images"]) == 2
    assert rows["8"]["bpp"] > rows["1"]["bpp"] > 0
    assert rows["1"]["ae"] == rows["8"]["ae"]  # the autoencoder alone does not see the gain
    with pytest.raises(SystemExit, match="--factors"):
        gain_probe.main(["ditic-test", "--data", str(tmp_path / "photos"), "--factors", "1,0"])
