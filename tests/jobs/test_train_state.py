"""Training state: EMA arithmetic, exact sharded round trips, precision levels, broken states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from codec.errors import CheckpointError
from jobs.train_state import EMA, load_state, read_state, save_state, slim_state, state_exists


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("scale", torch.ones(4))


def _trained(seed: int = 0, steps: int = 3) -> tuple[_Net, EMA, dict[str, torch.optim.Optimizer]]:
    torch.manual_seed(seed)
    net = _Net()
    ema = EMA(net, decay=0.9)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for step in range(steps):
        loss = net.body(torch.randn(5, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(net, step)
    return net, ema, {"main": opt}


def _all(net: nn.Module, ema: EMA, opts: dict) -> dict[str, torch.Tensor]:
    out = {f"m/{k}": v for k, v in net.state_dict().items()} | {f"e/{k}": v for k, v in ema.shadow.items()}
    for i, slot in opts["main"].state_dict()["state"].items():
        out |= {f"o/{i}/{k}": torch.as_tensor(v) for k, v in slot.items()}
    return out


def test_ema_warms_up_then_averages():
    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.99)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, 0)  # decay min(0.99, 1/10) = 0.1
    assert ema.shadow["weight"].item() == pytest.approx(0.9)
    ema.update(net, 1000)  # decay 0.99
    assert ema.shadow["weight"].item() == pytest.approx(0.9 + 0.1 * 0.01)
    target = nn.Linear(1, 1, bias=False)
    ema.copy_to(target)
    assert target.weight.item() == pytest.approx(ema.shadow["weight"].item())
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


def test_full_state_round_trips_exactly_across_many_shards(tmp_path: Path):
    net, ema, opts = _trained()
    meta = save_state(tmp_path, model=net, ema=ema, optimizers=opts, info={"step": 3}, shard_bytes=1024)
    assert meta["precision"] == "full" and len(meta["shards"]) > 3
    assert any("@@" in name for name in _stored_names(tmp_path))  # the 8×64 weights were cut
    assert all(p.stat().st_size <= 1024 + 2048 for p in tmp_path.glob("state-*.safetensors"))
    fresh, fresh_ema, fresh_opts = _trained(seed=1, steps=1)
    ids = [id(p) for p in fresh.parameters()]
    assert load_state(tmp_path, model=fresh, ema=fresh_ema, optimizers=fresh_opts)["step"] == 3
    assert [id(p) for p in fresh.parameters()] == ids  # copied in place: optimizers keep their params
    a, b = _all(net, ema, opts), _all(fresh, fresh_ema, fresh_opts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _stored_names(folder: Path) -> list[str]:
    from safetensors import safe_open

    names = []
    for path in folder.glob("state-*.safetensors"):
        with safe_open(str(path), "pt") as f:
            names += list(f.keys())
    return names


@pytest.mark.parametrize(
    ("budget", "level"), [(None, "full"), (10_000, "compact"), (5_000, "lean"), (1, "ema")]
)
def test_budget_picks_the_richest_precision_that_fits(tmp_path: Path, budget, level):
    net, ema, opts = _trained()
    meta = save_state(tmp_path, model=net, ema=ema, optimizers=opts, info={"step": 3}, budget_bytes=budget)
    assert meta["precision"] == level
    if budget and level != "ema":
        assert meta["bytes"] <= budget
    fresh, fresh_ema, fresh_opts = _trained(seed=1, steps=0)
    load_state(tmp_path, model=fresh, ema=fresh_ema, optimizers=fresh_opts)
    source = ema.shadow if level == "ema" else dict(net.state_dict())
    w = fresh.state_dict()["body.0.weight"]
    assert torch.allclose(w, source["body.0.weight"], rtol=1e-3, atol=1e-4)
    assert fresh.state_dict()["count"].dtype == torch.long
    assert bool(fresh_opts["main"].state) == (level in ("full", "compact"))


def test_slim_state_copies_within_a_budget(tmp_path: Path):
    net, ema, opts = _trained()
    save_state(tmp_path / "full", model=net, ema=ema, optimizers=opts, info={"step": 3, "stage": "B"})
    meta = slim_state(tmp_path / "full", tmp_path / "slim", budget_bytes=5_000)
    assert meta["precision"] == "lean" and meta["step"] == 3 and meta["stage"] == "B"
    assert read_state(tmp_path / "slim")[0]["optimizers"] == {}


def test_broken_states_are_named(tmp_path: Path):
    net, ema, opts = _trained()
    assert not state_exists(tmp_path)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state(tmp_path, model=net, ema=ema, optimizers=opts)
    save_state(tmp_path, model=net, ema=ema, optimizers=opts, info={}, shard_bytes=1024)
    other = nn.Sequential(nn.Linear(8, 3))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_state(tmp_path, model=other, ema=EMA(other), optimizers={})
    meta = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / meta["shards"][1]).unlink()
    with pytest.raises(CheckpointError, match="shard missing"):
        load_state(tmp_path, model=net, ema=ema, optimizers=opts)
    (tmp_path / "state.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(CheckpointError, match="expected"):
        read_state(tmp_path)


def test_resumed_moments_keep_the_parameter_layout_for_fused_adamw() -> None:
    """Saved moments come back contiguous; a channels_last weight needs them channels_last too, or
    fused AdamW refuses the first resumed step (seen on the H200)."""
    from jobs.train_state import _load_optimizer, _optimizer_tensors

    weight = torch.nn.Parameter(torch.randn(8, 4, 3, 3).contiguous(memory_format=torch.channels_last))
    opt = torch.optim.AdamW([weight], fused=True)
    weight.grad = torch.randn_like(weight)
    opt.step()
    tensors, meta = _optimizer_tensors(opt, "opt.main")
    tensors = {k: v.contiguous() for k, v in tensors.items()}  # as safetensors gives them back
    resumed = torch.nn.Parameter(weight.detach().clone().contiguous(memory_format=torch.channels_last))
    opt2 = torch.optim.AdamW([resumed], fused=True)
    _load_optimizer(opt2, "opt.main", tensors, meta)
    assert opt2.state[resumed]["exp_avg"].stride() == resumed.stride()
    torch.testing.assert_close(opt2.state[resumed]["exp_avg"], opt.state[weight]["exp_avg"])
    resumed.grad = weight.grad.clone()
    opt2.step()  # raised "must have same dtype, device, and layout" before the fix


def _one_element_step() -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    bias = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([bias], fused=True)
    bias.grad = torch.full_like(bias, 0.5)
    opt.step()
    return bias, opt


def test_one_element_parameters_resume_under_fused_adamw() -> None:
    """The discriminator's last bias has one element. Its moments were saved as scalars and came back
    0-d, so fused AdamW refused the first resumed step of stage C (session 16, on the H200). They are
    tensors of the parameter's shape now, and a state saved the old way still resumes."""
    from jobs.train_state import _load_optimizer, _optimizer_tensors

    bias, opt = _one_element_step()
    tensors, meta = _optimizer_tensors(opt, "opt.disc")
    tensors = {k: v.clone() for k, v in tensors.items()}  # as read back from disk: no shared storage
    assert tensors["opt.disc/0/exp_avg"].shape == (1,) and set(meta["scalars"]) == {"0/step"}
    moments = {k: v.clone() for k, v in opt.state[bias].items()}
    old_meta = {**meta, "scalars": {**meta["scalars"], "0/exp_avg": moments["exp_avg"].item(),
                                    "0/exp_avg_sq": moments["exp_avg_sq"].item()}}  # fmt: skip
    bias.grad = torch.full_like(bias, 0.5)
    opt.step()  # the uninterrupted second step
    for saved, how in ((tensors, meta), ({}, old_meta)):  # this session's layout, then the old one
        resumed, _ = _one_element_step()
        opt2 = torch.optim.AdamW([resumed], fused=True)
        _load_optimizer(opt2, "opt.disc", {k: v.clone() for k, v in saved.items()}, how)
        assert opt2.state[resumed]["exp_avg"].shape == (1,)
        torch.testing.assert_close(opt2.state[resumed]["exp_avg"], moments["exp_avg"])
        resumed.grad = torch.full_like(resumed, 0.5)
        opt2.step()  # raised "must have same dtype, device, and layout" before the fix
        torch.testing.assert_close(resumed, bias)


def test_other_modules_travel_in_the_state(tmp_path: Path) -> None:
    """A named module (the discriminator) is saved beside the model, restored in place, and reported;
    a state without it leaves the module as it was."""
    net, ema, opts = _trained()
    disc = nn.Linear(3, 1)
    kw = {"model": net, "ema": ema, "optimizers": opts, "info": {"step": 3}}
    save_state(tmp_path / "with", **kw, modules={"disc": disc})
    save_state(tmp_path / "without", **kw)
    net2, ema2, opts2 = _trained(seed=1)
    fresh = nn.Linear(3, 1)
    before = fresh.weight.detach().clone()
    meta = load_state(tmp_path / "without", model=net2, ema=ema2, optimizers=opts2, modules={"disc": fresh})
    assert meta["restored_modules"] == [] and torch.equal(fresh.weight, before)
    meta = load_state(tmp_path / "with", model=net2, ema=ema2, optimizers=opts2, modules={"disc": fresh})
    assert meta["restored_modules"] == ["disc"]
    assert torch.equal(fresh.weight, disc.weight) and torch.equal(fresh.bias, disc.bias)
    with pytest.raises(CheckpointError, match="disc does not fit"):
        load_state(tmp_path / "with", model=net2, ema=ema2, optimizers=opts2,
                   modules={"disc": nn.Linear(2, 1)})
    with pytest.raises(ValueError, match="taken"):
        save_state(tmp_path / "bad", **kw, modules={"ema": disc})
