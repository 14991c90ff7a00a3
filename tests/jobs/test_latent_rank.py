"""tools/latent_rank.py: the best linear code of the latent's 2×2 blocks at a width M."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import write_small_photos

from codec.api import load_codec

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("latent_rank", ROOT / "tools" / "latent_rank.py")
latent_rank = importlib.util.module_from_spec(spec)
spec.loader.exec_module(latent_rank)


def test_rank_errors_find_the_dimension_of_the_data():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(8, 3, generator=g))[0]  # data in a 3-dimensional subspace of 8
    train, held = (torch.randn(n, 3, generator=g) @ basis.T + 1.0 for n in (400, 50))
    errors = latent_rank.rank_errors(train, held, [1, 2, 3, 8])
    assert errors[1] > errors[2] > 0.01 and errors[3] < 1e-9 and errors[8] < 1e-9


def test_latent_blocks_are_the_2x2_blocks_of_the_encoders_latent(tmp_path: Path):
    model = load_codec("ditic-test", device="cpu").model
    crops = torch.rand(3, 3, 128, 128) * 2 - 1
    blocks = latent_rank.latent_blocks(model, crops, batch=2)
    latent = model.encode_latent(crops)[0].float()
    channels, h, w = latent.shape[1:]
    assert blocks.shape == (3 * (h // 2) * (w // 2), 4 * channels)
    assert torch.allclose(blocks[0], latent[0, :, :2, :2].reshape(channels, 4).reshape(-1), atol=1e-5)
    write_small_photos(tmp_path / "photos")
    with pytest.raises(SystemExit, match="widths"):
        latent_rank.main(["ditic-test", "--data", str(tmp_path / "photos"), "--widths", "0"])
