"""Checkpoints: safetensors tensors + JSON metadata (config, format version, code version, weights hash).

Loading never unpickles. The model id that payloads carry is the first 16 hex characters of a sha256
over the weights in canonical order (name, dtype, shape, bytes of each tensor, sorted by name), so it
names the exact weights, whatever file they came from.

The release's modules alias ``down``/``up`` as ``branch1``, so two names share one tensor. A checkpoint
stores each tensor once (under its first name); loading fills the aliases.

``convert_official`` turns a released ``.pth`` (flat state dict in the release layout, maybe wrapped in
``{"state_dict": ...}``) into our checkpoint for ``ditic-official``; it is the only ``torch.load`` here
and uses ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from codec.config import CodecConfig, get_config
from codec.errors import CheckpointError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointInfo",
    "canonical_names",
    "canonical_state_dict",
    "weights_hash",
    "save_checkpoint",
    "load_checkpoint",
    "convert_official",
    "DERIVED_BUFFERS",
]

FORMAT_NAME = "ditic-checkpoint"
FORMAT_VERSION = 1
MODEL_ID_CHARS = 16

# Coding tables that are a function of other tensors: recomputed by ``update`` rather than copied
# from a release checkpoint (their layout belongs to the entropy coder in use).
DERIVED_BUFFERS = tuple(
    f"codec.{module}.{name}"
    for module in ("entropy_bottleneck", "gaussian_conditional")
    for name in ("_quantized_cdf", "_cdf_length", "_offset")
)


@dataclass(frozen=True)
class CheckpointInfo:
    config: CodecConfig
    model_id: str
    trained: bool
    format_version: int
    code_version: str
    metadata: dict[str, str] = field(default_factory=dict)


def _code_version() -> str:
    try:
        from importlib.metadata import version

        return version("ditic-archive")
    except Exception:  # noqa: BLE001 - a source checkout without an installed distribution
        return "0+unknown"


def canonical_names(model: nn.Module) -> set[str]:
    """State-dict names without aliases: each parameter or buffer under its first name."""
    first = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    return first & set(model.state_dict(keep_vars=True))


def canonical_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``state_dict`` with each shared tensor once (first name wins), contiguous, sorted by name."""
    names = canonical_names(model)
    state = model.state_dict()
    return {name: state[name].detach().contiguous() for name in sorted(names)}


def weights_hash(state: dict[str, Tensor]) -> str:
    """sha256 (hex) over name, dtype, shape and bytes of each tensor, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}\n".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().data)  # no copy
    return digest.hexdigest()


INT8_SCALE = ".int8_scale"  # suffix of the per-output-channel scale of a tensor stored in int8


def quantize_int8(state: dict[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """``state`` with each floating weight of >= 2 dims under ``prefixes`` stored as int8, symmetric per
    output channel (``round(w / s)``, ``s = max|w| / 127`` over the channel), beside its fp32 scale
    under ``NAME.int8_scale``; biases and norms stay as they are. Halves what a decoder costs in a file."""
    out = {}
    for name, t in state.items():
        if not (name.startswith(prefixes) and t.is_floating_point() and t.dim() >= 2):
            out[name] = t
            continue
        w = t.float()
        scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127.0
        shape = (-1,) + (1,) * (w.dim() - 1)
        out[name] = torch.round(w / scale.view(shape)).clamp(-127, 127).to(torch.int8)
        out[name + INT8_SCALE] = scale
    return out


def dequantize_int8(state: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """The inverse of :func:`quantize_int8`, in ``dtype`` (the model's stored dtype)."""
    out = {k: v for k, v in state.items() if not k.endswith(INT8_SCALE)}
    for key, scale in state.items():
        if key.endswith(INT8_SCALE):
            name = key[: -len(INT8_SCALE)]
            q = out.get(name)
            if q is None or q.dtype != torch.int8 or scale.numel() != q.shape[0]:
                raise CheckpointError(f"int8 scale {key} does not match its tensor")
            out[name] = (q.float() * scale.float().view((-1,) + (1,) * (q.dim() - 1))).to(dtype)
    return out


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    trained: bool = True,
    extra: dict[str, str] | None = None,
    int8: tuple[str, ...] = (),
) -> str:
    """Write ``model`` (a DiTIC) to ``path`` (.safetensors); returns its model id. ``int8``: name
    prefixes whose weights are stored in int8 (:func:`quantize_int8`; e.g. the DC-AE decoders), so
    the model loads with those weights rounded; the id names the stored tensors."""
    from safetensors.torch import save_file

    if getattr(model, "decoder_in_use", "perceptual") != "perceptual":
        raise ValueError("swap the perceptual decoder back (model.use_decoder('perceptual')) before saving")
    model.update(force=True)  # the coding tables travel with the weights, rebuilt for these weights
    state = canonical_state_dict(model)
    int8_meta = {}
    if int8:
        stored = _stored_dtype({k: v for k, v in state.items() if k.startswith(tuple(int8))})
        int8_meta = {"int8_dtype": str(stored).removeprefix("torch.")}
        state = quantize_int8(state, tuple(int8))
    digest = weights_hash(state)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "code_version": _code_version(),
        "config": json.dumps(model.cfg.to_dict(), sort_keys=True),
        "weights_sha256": digest,
        "model_id": digest[:MODEL_ID_CHARS],
        "trained": "true" if trained else "false",
        **int8_meta,
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.cpu() for k, v in state.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)
    return metadata["model_id"]


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a DiT-IC checkpoint (format {metadata.get('format')!r})")
    version = metadata.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: checkpoint format version {version} (this code reads {FORMAT_VERSION})"
        )
    return metadata


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Config, model id and provenance of a checkpoint, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    meta = _read_metadata(path)
    try:
        config = CodecConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad config in checkpoint metadata ({e})") from e
    known = {"format", "format_version", "code_version", "config", "weights_sha256", "model_id", "trained",
             "int8_dtype"}
    return CheckpointInfo(
        config=config,
        model_id=meta.get("model_id", ""),
        trained=meta.get("trained", "true") == "true",
        format_version=int(meta["format_version"]),
        code_version=meta.get("code_version", ""),
        metadata={k: v for k, v in meta.items() if k not in known},
    )


def load_state(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load a canonical (alias-free) state into ``model`` (tensors are assigned, not copied, so the
    model may be built on the meta device); raises CheckpointError naming the keys that do not fit."""
    expected = model.state_dict(keep_vars=True)
    canonical = canonical_names(model)
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(canonical - set(state))
    if unexpected or missing:
        raise CheckpointError(
            f"{source}: checkpoint does not fit the config: missing {missing[:8]} ({len(missing)}), "
            f"unexpected {unexpected[:8]} ({len(unexpected)})"
        )
    for name, tensor in state.items():
        if name not in DERIVED_BUFFERS and tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, "
                f"config expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=False, assign=True)
    left = [n for n, t in model.state_dict(keep_vars=True).items() if t.is_meta]
    if left:
        raise CheckpointError(f"{source}: tensors not loaded: {left[:8]}")


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", *, verify: bool = True
) -> tuple[nn.Module, CheckpointInfo]:
    """(DiTIC in eval mode, info). ``verify`` recomputes the weights hash and checks the stored one."""
    from safetensors.torch import load_file

    info = read_checkpoint_info(path)
    state = load_file(str(path), device="cpu")
    if verify:
        digest = weights_hash(state)
        if digest[:MODEL_ID_CHARS] != info.model_id:
            raise CheckpointError(
                f"{path}: weights hash {digest[:MODEL_ID_CHARS]} does not match the stored model id "
                f"{info.model_id} (corrupt or edited file)"
            )
    if any(k.endswith(INT8_SCALE) for k in state):
        dtype = getattr(torch, _read_metadata(Path(path)).get("int8_dtype", "float32"), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise CheckpointError(f"{path}: bad int8_dtype in checkpoint metadata")
        state = dequantize_int8(state, dtype)
    with torch.device("meta"):  # no random init: every tensor comes from the file
        model = _build(info.config)
    load_state(model, state, str(path))
    return model.to(device).eval(), info


def _stored_dtype(state: dict[str, Tensor]) -> torch.dtype:
    """The dtype most floating weights of ``state`` have (what int8 weights load back as)."""
    counts: dict[torch.dtype, int] = {}
    for t in state.values():
        if t.is_floating_point():
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def _build(config: CodecConfig) -> nn.Module:
    from codec.model import DiTIC

    return DiTIC(config)


def _unwrap_release(obj: object, source: str) -> dict[str, Tensor]:
    for key in ("state_dict", "model", "ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and "timesteps" not in obj:
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: not a flat state dict of tensors in the release layout")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _torch_load(path: Path) -> object:
    if not path.is_file():
        raise CheckpointError(f"release checkpoint not found: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        pass  # legacy (non-zip) files cannot be memory-mapped
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: cannot read as a weights-only torch checkpoint ({e})") from e


def convert_official(pth_path: str | Path, out_path: str | Path) -> str:
    """Release ``.pth`` -> our ``ditic-official`` checkpoint at ``out_path``; returns the model id.

    Every release key must land (aliases included); the coding tables (``DERIVED_BUFFERS``) are
    recomputed from the entropy models' parameters instead of copied.
    """
    pth_path = Path(pth_path)
    release = _unwrap_release(_torch_load(pth_path), str(pth_path))
    with torch.device("meta"):  # the tensors come from the release file (memory-mapped when possible)
        model = _build(get_config("ditic-official"))
    expected = set(model.state_dict(keep_vars=True))
    missing = sorted(expected - set(release))
    unexpected = sorted(set(release) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{pth_path}: not the release layout: missing {missing[:8]} ({len(missing)}), "
            f"unexpected {unexpected[:8]} ({len(unexpected)})"
        )
    names = canonical_names(model)
    # clone: a memory-mapped or storage-sharing source must not back the saved tensors
    load_state(model, {k: v.clone() for k, v in release.items() if k in names}, str(pth_path))
    model.update(force=True)
    return save_checkpoint(model, out_path, trained=True, extra={"source": pth_path.name})
