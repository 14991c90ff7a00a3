"""``ditic-official`` against the release: key set, shapes, parameter counts, .pth conversion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from codec.config import get_config
from codec.model import DiTIC
from codec.weights import DERIVED_BUFFERS, convert_official

pytestmark = pytest.mark.usefixtures("one_thread")

PARTS = {"vae": "vae", "DiT": "dit", "codec": "codec", "prompter": "prompter", "aux_codec": "aux"}


@pytest.fixture(scope="module")
def reference(request) -> dict:
    from tests.conftest import SHARED

    folder = SHARED / "reference"
    if not (folder / "official_ditic_state_dict_shapes.json").is_file():
        pytest.skip(f"release reference files not found in {folder}")
    shapes = json.loads((folder / "official_ditic_state_dict_shapes.json").read_text())
    anchor = json.loads((folder / "official_ditic_anchor_h200.json").read_text())
    return {"shapes": shapes, "params_m": anchor["params_m"]}


@pytest.fixture(scope="module")
def meta_model() -> DiTIC:
    with torch.device("meta"):
        return DiTIC(get_config("ditic-official"))


def test_key_set_and_shapes_equal_the_release(reference, meta_model):
    ours = {k: list(v.shape) for k, v in meta_model.state_dict().items()}
    assert len(reference["shapes"]) == 1492
    assert set(ours) == set(reference["shapes"])
    differing = {k for k in ours if ours[k] != reference["shapes"][k]}
    assert differing == set(DERIVED_BUFFERS)  # coding tables: empty until update()


def test_parameter_counts_match_the_release(reference, meta_model):
    for attr, key in PARTS.items():
        count = sum(p.numel() for p in getattr(meta_model, attr).parameters())
        assert count / 1e6 == pytest.approx(reference["params_m"][key], abs=5e-7), attr
    total = sum(p.numel() for p in meta_model.parameters())
    assert 1.04e9 < total < 1.06e9


def _release_like(shapes: dict) -> dict[str, torch.Tensor]:
    """Random tensors in the release layout, scaled so a forward pass stays finite.

    The large ones are float16 windows (views) of shared random pools, one per fan-in, each scaled by
    1/sqrt(fan-in): torch.save writes each pool once, so the .pth stays small. Conversion must still
    give every key its own tensor.
    """
    gen = torch.Generator().manual_seed(0)
    big = {n: s for n, s in shapes.items() if math.prod(s) > 4096 and n not in DERIVED_BUFFERS}
    need: dict[int, int] = {}
    for shape in big.values():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        need[fan_in] = max(need.get(fan_in, 0), math.prod(shape) + 4099)
    pools = {f: (torch.randn(n, generator=gen) / math.sqrt(f)).half() for f, n in need.items()}
    state = {}
    for i, (name, shape) in enumerate(shapes.items()):
        if name in big:
            pool = pools[math.prod(shape[1:]) if len(shape) > 1 else 1]
            offset = (i * 577) % (pool.numel() - math.prod(shape))
            state[name] = pool[offset : offset + math.prod(shape)].view(shape)
        elif name in DERIVED_BUFFERS:  # garbage on purpose: conversion must recompute them
            state[name] = torch.randint(0, 1000, shape, generator=gen, dtype=torch.int32)
        elif name == "timesteps" or name.endswith(_SPECIAL):
            state[name] = _special(name, shape)
        elif name.endswith(("norm.weight", "norm_out.weight")):
            state[name] = 1 + 0.01 * torch.randn(shape, generator=gen)
        else:
            scale = 1 / math.sqrt(shape[-1]) if len(shape) >= 2 else 0.01
            state[name] = scale * torch.randn(shape, generator=gen)
    for name in list(state):  # the release aliases down/up as branch1: one tensor, two names
        for alias in (".down.", ".up."):
            twin = name.replace(".branch1.", alias)
            if ".branch1." in name and twin in state:
                state[name] = state[twin]
    return state


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.float16:
        return torch.equal(a.view(torch.int16), b.view(torch.int16))
    return torch.equal(a, b)


_SPECIAL = ("quantiles", "scale_table", "scale_bound", ".bound", "entropy_bottleneck.target")


def _special(name: str, shape: list[int]) -> torch.Tensor:
    if name == "timesteps":
        return torch.tensor([999])
    if name.endswith("quantiles"):
        return torch.tensor([-8.0, 0.0, 8.0]).expand(shape).clone()
    if name.endswith("scale_table"):
        return torch.exp(torch.linspace(math.log(0.11), math.log(256), shape[0]))
    if name.endswith(("scale_bound", "lower_bound_scale.bound")):
        return torch.tensor([0.11])
    if name.endswith("likelihood_lower_bound.bound"):
        return torch.tensor([1e-9])
    t = math.log(2 / 1e-9 - 1)  # entropy_bottleneck.target
    return torch.tensor([-t, 0.0, t])


def test_convert_release_checkpoint_and_code_with_it(reference, tmp_path):
    from codec.api import Codec
    from codec.weights import load_checkpoint

    release = _release_like(reference["shapes"])
    pth = tmp_path / "DiT-IC_merged.pth"
    torch.save({"state_dict": release}, pth)
    out = tmp_path / "ditic-official.safetensors"
    model_id = convert_official(pth, out)

    model, info = load_checkpoint(out, verify=False)
    assert info.config.name == "ditic-official" and info.model_id == model_id and info.trained
    ours = model.state_dict()
    assert set(ours) == set(release)  # none missing, none unexpected (aliases included)
    for name, tensor in release.items():
        if name in DERIVED_BUFFERS:
            continue  # recomputed by update(), named in DERIVED_BUFFERS
        assert _same_bits(ours[name], tensor), name
    for name in DERIVED_BUFFERS:  # recomputed from the entropy models, not the garbage we wrote
        assert ours[name].numel() and not torch.equal(ours[name], release[name]), name
    gc_cdf = "codec.gaussian_conditional._quantized_cdf"
    assert list(ours[gc_cdf].shape) == reference["shapes"][gc_cdf]  # the same 64 Gaussian tables
    del ours, release

    codec = Codec(model, info.config.name, model_id, trained=True)
    image = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    payload = codec.encode([image])[0]
    assert codec.info(payload).model_id == model_id
    decoded = codec.decode([payload])[0]
    assert decoded.size == (56, 40) and np.isfinite(np.asarray(decoded, dtype=float)).all()


def test_convert_cli_reports_a_bad_release_cleanly(tmp_path, capsys):
    from jobs.cli import main

    bad = tmp_path / "not-a-release.pth"
    torch.save({"state_dict": {"some.weight": torch.ones(2)}}, bad)
    assert main(["convert-official", str(bad), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "not the release layout" in err and "missing" in err and "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()
