"""Checkpoints: save/load round trip, model ids, refusal of broken or foreign files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codec.errors import CheckpointError
from codec.weights import (
    FORMAT_VERSION,
    canonical_state_dict,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
    weights_hash,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return path, save_checkpoint(tiny_model, path, trained=False, extra={"note": "test"})


def test_save_load_roundtrip_decodes_identically(tiny_codec, saved, photo):
    from codec.api import load_codec

    path, model_id = saved
    assert model_id == tiny_codec.model_id  # the id names the weights, not the file
    info = read_checkpoint_info(path)
    assert (info.model_id, info.trained, info.format_version) == (model_id, False, FORMAT_VERSION)
    assert info.config == tiny_codec.config and info.metadata == {"note": "test"}
    model, _ = load_checkpoint(path)
    original, loaded = canonical_state_dict(tiny_codec.model), canonical_state_dict(model)
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    # aliases (branch1 = down/up) are stored once and shared again after loading
    assert len(model.state_dict()) > len(loaded)
    g_a_down = model.codec.g_a.analysis_transform[2]
    assert g_a_down.branch1.weight is g_a_down.down.weight
    payload = tiny_codec.encode([photo], quality=3)[0]
    reloaded = load_codec(path)
    assert reloaded.model_id == model_id and not reloaded.trained
    assert np.array_equal(
        np.asarray(tiny_codec.decode([payload])[0]), np.asarray(reloaded.decode([payload])[0])
    )


def test_model_id_is_a_hash_of_the_weights():
    state = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.ones(2, dtype=torch.float16)}
    digest = weights_hash(state)
    assert digest == weights_hash(dict(reversed(state.items())))  # canonical order
    assert digest != weights_hash({**state, "b": state["b"].reshape(3, 2)})  # shape counts
    assert digest != weights_hash({**state, "a": state["a"].float()})  # dtype counts
    changed = state["b"].clone()
    changed[1, 2] += 1e-6
    assert digest != weights_hash({**state, "b": changed})


def test_edited_weights_are_refused(saved, tmp_path):
    path, _ = saved
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    data[8 + header_len + 100] ^= 0xFF  # a byte inside the tensor data
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the stored model id"):
        load_checkpoint(edited)


def _rewrite_metadata(path, tmp_path, **changes):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    metadata.update(changes)
    out = tmp_path / "rewritten.safetensors"
    save_file(load_file(str(path)), str(out), metadata=metadata)
    return out


def test_foreign_or_future_files_are_refused(saved, tmp_path):
    path, _ = saved
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(_rewrite_metadata(path, tmp_path, format_version="99"))
    with pytest.raises(CheckpointError, match="not a DiT-IC checkpoint"):
        load_checkpoint(_rewrite_metadata(path, tmp_path, format="something-else"))
    wrong_config = read_checkpoint_info(path).config.to_dict()
    wrong_config["latent"]["M"] = 24
    with pytest.raises(CheckpointError, match="does not fit the config"):
        load_checkpoint(_rewrite_metadata(path, tmp_path, config=json.dumps(wrong_config)), verify=False)
    pickle = tmp_path / "model.pth"
    torch.save({"x": torch.ones(1)}, pickle)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(pickle)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
