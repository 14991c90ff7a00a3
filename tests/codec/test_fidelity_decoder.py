"""A second DC-AE decoder for the same latent (``vae.fidelity_decoder``), chosen at decode time, and
the int8 storage that lets the embedded model carry both within its 24 MiB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codec.api import load_codec, split_decoder
from codec.config import get_config
from codec.errors import CheckpointError
from codec.model import DiTIC
from codec.weights import dequantize_int8, load_checkpoint, quantize_int8, save_checkpoint
from jobs.cli import main
from pipeline.restore import archive_model


def _both(seed: int = 0) -> DiTIC:
    """ditic-test with a fidelity decoder whose weights differ from the perceptual one's."""
    torch.manual_seed(seed)
    model = DiTIC(get_config("ditic-test").replace(**{"vae.fidelity_decoder": True})).eval()
    with torch.no_grad():
        for p in model.fidelity_decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def both_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("both") / "both.safetensors"
    save_checkpoint(_both(), path)
    return path


@pytest.fixture(scope="module")
def image(example_photos: list[Path]) -> np.ndarray:
    with Image.open(example_photos[0]) as im:
        return np.asarray(im.convert("RGB").reduce(8))[:96, :128].copy()


def test_split_decoder_reads_only_known_suffixes():
    assert split_decoder("ditic-small:fidelity") == ("ditic-small", "fidelity")
    assert split_decoder("/m/x.safetensors:perceptual") == ("/m/x.safetensors", "perceptual")
    assert split_decoder("ditic-small") == ("ditic-small", None)
    assert split_decoder("C:/models/x.safetensors") == ("C:/models/x.safetensors", None)  # not a decoder


def test_the_same_payload_decodes_with_either_decoder(both_path: Path, image: np.ndarray):
    perceptual = load_codec(both_path)
    fidelity = load_codec(f"{both_path}:fidelity")
    assert (perceptual.decoder, fidelity.decoder) == ("perceptual", "fidelity")
    assert perceptual.model_id == fidelity.model_id  # one model, so payloads carry one id
    payload = perceptual.encode([image], 2)[0]
    assert fidelity.encode([image], 2)[0] == payload  # the encoder side is untouched
    a = np.asarray(perceptual.decode([payload])[0])
    b = np.asarray(fidelity.decode([payload])[0])
    assert a.shape == b.shape == image.shape and not np.array_equal(a, b)
    # the fidelity decode is exactly a model whose one decoder is the fidelity decoder
    reference = load_codec(both_path)
    reference.model.vae.decoder.load_state_dict(reference.model.fidelity_decoder.state_dict())
    assert np.array_equal(np.asarray(reference.decode([payload])[0]), b)


def test_decoder_choice_errors(both_path: Path):
    with pytest.raises(CheckpointError, match="no fidelity decoder"):
        load_codec("ditic-test:fidelity")
    with pytest.raises(ValueError, match="names the fidelity decoder"):
        load_codec(f"{both_path}:fidelity", decoder="perceptual")
    model = load_checkpoint(both_path)[0]
    with pytest.raises(ValueError, match="decoder must be one of"):
        model.use_decoder("sharp")
    model.use_decoder("fidelity")
    with pytest.raises(ValueError, match="swap the perceptual decoder back"):
        save_checkpoint(model, both_path.with_name("swapped.safetensors"))
    model.use_decoder("perceptual")  # and back: the modules trade places again
    assert model.decoder_in_use == "perceptual"
    saved = load_checkpoint(both_path)[0]
    assert torch.equal(model.vae.decoder.conv_out.weight, saved.vae.decoder.conv_out.weight)


def test_int8_storage_rounds_each_channel_and_round_trips(tmp_path: Path, both_path: Path):
    w = torch.randn(8, 4, 3, 3) * torch.logspace(-3, 0, 8).view(-1, 1, 1, 1)  # channels of unlike scales
    state = {"vae.decoder.w": w, "vae.decoder.b": torch.randn(8), "codec.x": torch.randn(8, 4)}
    stored = quantize_int8(state, ("vae.decoder.",))
    assert stored["vae.decoder.w"].dtype == torch.int8 and stored["codec.x"] is state["codec.x"]
    assert stored["vae.decoder.b"] is state["vae.decoder.b"]  # 1-d tensors stay as they are
    back = dequantize_int8(stored, torch.float32)
    assert set(back) == set(state)
    err = (back["vae.decoder.w"] - w).abs().flatten(1).amax(1)
    bound = w.abs().flatten(1).amax(1) / 254 + 1e-7  # half a step of each channel's own scale
    assert torch.all(err <= bound), (err, bound)
    with pytest.raises(CheckpointError, match="does not match"):
        dequantize_int8({**stored, "vae.decoder.w.int8_scale": torch.ones(3)}, torch.float32)
    # a model saved with int8 decoders: smaller, its id verifies, it loads within the rounding
    model = load_checkpoint(both_path)[0]
    path = tmp_path / "int8.safetensors"
    save_checkpoint(model, path, int8=("vae.decoder.", "fidelity_decoder."))
    assert path.stat().st_size < both_path.stat().st_size
    loaded, info = load_checkpoint(path)  # verify=True: the hash is over what is stored
    assert info.metadata == {} and loaded.fidelity_decoder.conv_out.weight.dtype == torch.float32
    a, b = model.state_dict(), loaded.state_dict()
    for k in a:
        if k.startswith(("vae.decoder.", "fidelity_decoder.")) and a[k].dim() >= 2:
            scale = a[k].abs().flatten(1).amax(1).clamp_min(1e-12) / 127
            assert torch.all((a[k] - b[k]).abs().flatten(1).amax(1) <= scale / 2 + 1e-6), k
        elif not k.startswith("codec.gaussian_conditional._"):
            assert torch.equal(a[k], b[k]), k


def test_cli_and_restore_take_the_decoder(both_path: Path, image: np.ndarray, tmp_path: Path):
    src = tmp_path / "photo.png"
    Image.fromarray(image).save(src)
    model = ["--model", str(both_path), "--device", "cpu"]
    assert main(["compress", str(src), "-o", str(tmp_path / "c"), "-q", "1", *model]) == 0
    payload = tmp_path / "c" / "photo.dtic"
    outs = {}
    for decoder in ("perceptual", "fidelity"):
        out = tmp_path / decoder
        assert main(["decompress", str(payload), "-o", str(out), "--decoder", decoder, *model]) == 0
        outs[decoder] = np.asarray(Image.open(out / "photo.png"))
    assert not np.array_equal(outs["perceptual"], outs["fidelity"])
    fidelity = load_codec(both_path, decoder="fidelity")
    decoded = fidelity.decode([payload.read_bytes()])[0].convert("RGB")
    assert np.array_equal(np.asarray(decoded), outs["fidelity"])
    for model, decoder, expected in [("ditic-small", "fidelity", "ditic-small:fidelity"),
                                     ("ditic-small", None, "ditic-small"),
                                     ("ditic-small:fidelity", None, "ditic-small:fidelity"),  # the archive's
                                     ("ditic-small:fidelity", "perceptual", "ditic-small")]:  # fmt: skip
        assert archive_model(None, model, decoder) == expected  # type: ignore[arg-type]


def test_the_embedded_model_ships_both_decoders_within_the_cap(image: np.ndarray):
    """The default model carries its fidelity decoder (int8 decoders, session 16) in at most 24 MiB."""
    from codec.api import EMBEDDED_WEIGHTS

    shipped = EMBEDDED_WEIGHTS / "ditic-small.safetensors"
    if not shipped.is_file():
        pytest.skip("no embedded weights in this checkout")
    assert shipped.stat().st_size <= 24 * 2**20
    perceptual, fidelity = load_codec("ditic-small"), load_codec("ditic-small:fidelity")
    payload = perceptual.encode([image[:64, :64]], 4)[0]
    a, b = (np.asarray(c.decode([payload])[0]).astype(float) for c in (perceptual, fidelity))
    assert 0 < np.abs(a - b).mean() < 40  # two decoders of one latent: alike, not equal
