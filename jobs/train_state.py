"""Training state that survives a GPU session: EMA weights and sharded, pickle-free checkpoints.

A state folder holds ``state.json`` (step, stage, options, optimizer hyper-parameters,
the tensor index) and ``state-NNNNN.safetensors`` shards of at most ``shard_bytes`` each, so every
piece fits what a device run can bring back. ``state.json`` is written last: it is the commit
marker, and a reader never sees a half-written state. Loading needs no unpickling.

Precision levels, richest first; :func:`save_state` takes the richest that fits ``budget_bytes``:
``full`` (fp32 everything: resumes bit for bit), ``compact`` (model fp32, EMA fp16, Adam moments
bf16: resumes with a tiny drift), ``lean`` (model and EMA fp16, no optimizer: ¼ of ``full``;
resumes with fresh Adam moments under a new warm-up; rounding the weights once to fp16 perturbs
them by ~5e-4 relative, less than one step's update), ``ema`` (EMA fp16 alone: the model restarts
from its average). Entropy-model tensors stay fp32 throughout. ditic-small (10 M parameters) is
160 MB ``full``, 40 MB ``lean``, 20 MB ``ema``: what a device run can return and carry again.
Random streams are not stored: the trainer seeds each step from (seed, rank, step).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from codec.errors import CheckpointError
from codec.weights import canonical_state_dict

__all__ = [
    "EMA",
    "STATE_FORMAT",
    "PRECISIONS",
    "FP32_NAMES",
    "save_state",
    "load_state",
    "read_state",
    "slim_state",
    "state_exists",
]

STATE_FORMAT = "ditic-train-state/1"
PRECISIONS = ("full", "compact", "lean", "ema")
SHARD_BYTES = 15 * 2**20
FP32_NAMES = ("codec.entropy_bottleneck.", "codec.gaussian_conditional.", "gain")
"""Tensors kept fp32 at every precision: the entropy models' coding tables are built from them."""


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    ``decay`` is warmed up as min(decay, (1 + t) / (10 + t)), so a short run's average is not
    dominated by its random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self._live_owner: nn.Module | None = None
        state = canonical_state_dict(model)  # tensors shared under two names are averaged once
        self.shadow = {k: v.detach().clone().float() for k, v in state.items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        if self._live_owner is not model:  # state_dict() costs milliseconds: build the lists once
            live = model.state_dict()
            self._names = list(self.shadow)
            self._targets = [self.shadow[k] for k in self._names]
            self._sources = [live[k] for k in self._names]
            self._live_owner = model
        sources = [t if t.dtype == torch.float32 else t.float() for t in self._sources]
        torch._foreach_lerp_(self._targets, sources, 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (its non-float buffers are left as they are)."""
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v)


def _pack_tensors(tensors: dict[str, torch.Tensor], shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Greedy shards of at most ``shard_bytes``; a tensor larger than that is cut into ``name@@k``."""
    pieces: list[tuple[str, torch.Tensor]] = []
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.numel() * t.element_size() <= shard_bytes:
            pieces.append((name, t))
            continue
        flat = t.reshape(-1)
        per = max(1, shard_bytes // t.element_size())
        pieces += [(f"{name}@@{k}", c.clone()) for k, c in enumerate(flat.split(per))]
    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for name, t in pieces:
        size = t.numel() * t.element_size()
        if used + size > shard_bytes and shards[-1]:
            shards.append({})
            used = 0
        shards[-1][name] = t
        used += size
    return shards


def _unpack_tensors(flat: dict[str, torch.Tensor], shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name, t in flat.items():
        base, sep, k = name.partition("@@")
        if sep:
            parts.setdefault(base, []).append((int(k), t))
        else:
            out[name] = t
    for base, chunks in parts.items():
        out[base] = torch.cat([c for _, c in sorted(chunks, key=lambda kc: kc[0])]).reshape(shapes[base])
    return out


def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    state = opt.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for idx, slots in state["state"].items():
        for key, value in slots.items():
            # a moment of a one-element parameter (the discriminator's last bias) is a tensor of its
            # shape, not a scalar: restored as 0-d, fused AdamW refused it (session 16's stage-C resume)
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                tensors[f"{prefix}/{idx}/{key}"] = value
            else:
                meta["scalars"][f"{idx}/{key}"] = float(value)
    return tensors, meta


def _load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict, meta: dict) -> None:
    slots: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith(prefix + "/"):
            idx, key = name[len(prefix) + 1 :].split("/")
            slots.setdefault(int(idx), {})[key] = t.float() if t.is_floating_point() else t
    for name, value in meta["scalars"].items():
        idx, key = name.split("/")
        slots.setdefault(int(idx), {})[key] = torch.tensor(value, dtype=torch.float32)
    opt.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    # moments must share their parameter's strides: fused AdamW refuses a contiguous exp_avg beside a
    # channels_last weight (the first resumed step on the GPU failed so)
    for group in opt.param_groups:
        for param in group["params"]:
            slots = opt.state.get(param, {})
            for key, value in slots.items():
                if isinstance(value, torch.Tensor) and key != "step" and value.dim() == 0 < param.dim():
                    # states saved before session 16 kept one-element moments as scalars
                    value = slots[key] = value.reshape(param.shape)
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    if value.stride() != param.stride():
                        slots[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _collect(
    model: nn.Module, ema: EMA, optimizers: dict, modules: dict[str, nn.Module] | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """Every tensor of the state at full precision, and the optimizers' non-tensor parts."""
    tensors = {f"model/{k}": v for k, v in canonical_state_dict(model).items()}
    tensors |= {f"ema/{k}": v for k, v in ema.shadow.items()}
    for name, module in (modules or {}).items():  # e.g. the adversarial stage's discriminator
        if name in ("model", "ema") or name.startswith("opt."):
            raise ValueError(f"module name {name!r} is taken by the state's own parts")
        tensors |= {f"{name}/{k}": v for k, v in module.state_dict().items()}
    opt_meta = {}
    for name, opt in optimizers.items():
        t, opt_meta[name] = _optimizer_tensors(opt, f"opt.{name}")
        tensors |= t
    return tensors, opt_meta


def _reduce(tensors: dict[str, torch.Tensor], precision: str) -> dict[str, torch.Tensor]:
    """The tensors a precision level keeps, cast as it says (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    out = {}
    for name, t in tensors.items():
        kind = name.split("/", 1)[0]
        if precision in ("lean", "ema") and kind.startswith("opt.") or precision == "ema" and kind == "model":
            continue
        keep_fp32 = any(k in name for k in FP32_NAMES)
        if not t.is_floating_point() or precision == "full" or keep_fp32:
            out[name] = t
        elif kind.startswith("opt."):
            out[name] = t.to(torch.bfloat16)
        elif kind == "ema" or precision != "compact":
            out[name] = t.to(torch.float16)
        else:
            out[name] = t
    return out


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _write(folder: Path, tensors: dict, meta: dict, budget_bytes: int | None, shard_bytes: int) -> dict:
    """Reduce to the richest precision within the budget, shard, write; state.json goes last."""
    for precision in PRECISIONS:
        kept = _reduce(tensors, precision)
        if budget_bytes is None or _nbytes(kept) <= budget_bytes or precision == PRECISIONS[-1]:
            break
    if precision in ("lean", "ema"):
        meta = {**meta, "optimizers": {}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").unlink(missing_ok=True)
    for old in folder.glob("state-*.safetensors"):
        old.unlink()
    names = []
    for i, shard in enumerate(_pack_tensors(kept, shard_bytes)):
        names.append(f"state-{i:05d}.safetensors")
        save_file(shard, str(folder / names[-1]))
    meta = {
        **meta,
        "format": STATE_FORMAT,
        "precision": precision,
        "saved_at": time.time(),
        "bytes": _nbytes(kept),
        "shards": names,
        "shapes": {k: list(v.shape) for k, v in kept.items()},
    }
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(folder / "state.json")
    return meta


def save_state(
    folder: str | Path,
    *,
    model: nn.Module,
    ema: EMA,
    optimizers: dict[str, torch.optim.Optimizer],
    info: dict[str, Any],
    budget_bytes: int | None = None,
    shard_bytes: int = SHARD_BYTES,
    modules: dict[str, nn.Module] | None = None,
) -> dict[str, Any]:
    """Write the training state to ``folder`` (replacing an older one); returns what state.json holds.
    ``modules``: other trained modules by name (the discriminator), kept at the model's precision."""
    tensors, opt_meta = _collect(model, ema, optimizers, modules)
    return _write(Path(folder), tensors, {**info, "optimizers": opt_meta}, budget_bytes, shard_bytes)


def read_state(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(state.json, every tensor by name) of a saved state; no unpickling."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read training state in {folder}: {e}") from e
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{folder}/state.json is {meta.get('format')!r}, expected {STATE_FORMAT!r}")
    flat: dict[str, torch.Tensor] = {}
    for name in meta["shards"]:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"training state shard missing: {path}")
        flat |= load_file(str(path))
    return meta, _unpack_tensors(flat, meta["shapes"])


def slim_state(
    src: str | Path, dst: str | Path, budget_bytes: int | None, shard_bytes: int = SHARD_BYTES
) -> dict[str, Any]:
    """Copy a state at the richest precision that fits ``budget_bytes`` (to carry it off a machine)."""
    meta, tensors = read_state(src)
    keep = {
        k: v
        for k, v in meta.items()
        if k not in ("format", "precision", "saved_at", "bytes", "shards", "shapes")
    }
    return _write(Path(dst), tensors, keep, budget_bytes, shard_bytes)


def state_exists(folder: str | Path) -> bool:
    return (Path(folder) / "state.json").is_file()


def load_state(
    folder: str | Path,
    *,
    model: nn.Module,
    ema: EMA,
    optimizers: dict[str, torch.optim.Optimizer],
    modules: dict[str, nn.Module] | None = None,
) -> dict[str, Any]:
    """Restore a state written by :func:`save_state` in place; returns its ``state.json``, with
    ``restored_modules`` listing which of ``modules`` it held. Optimizers the state does not hold (a
    ``lean`` state) keep their fresh state, and so do modules (states saved before session 16 lack the
    discriminator)."""
    meta, tensors = read_state(folder)
    prefix = "ema/" if meta["precision"] == "ema" else "model/"  # an "ema" state restarts from the EMA
    state = {k[len(prefix) :]: _as_fp32(v) for k, v in tensors.items() if k.startswith(prefix)}
    if prefix == "ema/":
        state |= {k: v for k, v in canonical_state_dict(model).items() if k not in state}
    _load_model(model, state, f"training state {folder}")
    for k in ema.shadow:
        if f"ema/{k}" not in tensors:
            raise CheckpointError(f"training state {folder} lacks the EMA of {k}")
        ema.shadow[k].copy_(tensors[f"ema/{k}"])
    restored = []
    for name, module in (modules or {}).items():
        own = {k[len(name) + 1 :]: _as_fp32(v) for k, v in tensors.items() if k.startswith(name + "/")}
        if own:
            try:
                module.load_state_dict(own, strict=True)
            except RuntimeError as e:
                raise CheckpointError(f"training state {folder}: its {name} does not fit: {e}") from e
            restored.append(name)
    for name, opt in optimizers.items():
        if name in meta["optimizers"]:
            _load_optimizer(opt, f"opt.{name}", tensors, meta["optimizers"][name])
    return {**meta, "restored_modules": restored}


def _as_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t


def _load_model(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy (never assign) ``state`` into ``model``, so optimizers keep holding its parameters.
    Names that alias another tensor are filled through the shared storage."""
    missing = sorted(set(canonical_state_dict(model)) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{source} does not fit this model: {e}") from e
