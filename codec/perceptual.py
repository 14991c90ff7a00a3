"""ST-LPIPS: shift-tolerant LPIPS (Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric",
ECCV 2022), without torchvision.

LPIPS (Zhang et al. 2018) compares unit-normalised deep features of two images layer by layer:
``d(x, x̂) = Σ_l mean_hw( w_l · (f̂_l(x) − f̂_l(x̂))² )`` with a learned 1×1 head ``w_l`` per layer.
The shift-tolerant variant swaps the backbone's strided convolutions and max-pools for stride-1
ones followed by anti-aliasing blur-pools (Zhang 2019, "Making CNNs shift-invariant again"):
a binomial [1 2 1]ᵀ[1 2 1]/16 filter applied depthwise after reflection padding of 2 on each
side ("pad more"), then sub-sampling by 2.

The weights are the ``stlpips-pytorch`` 0.0.2 release (``weights/vST0.0/{alex,vgg}_shift_tolerant.pth``:
backbone, blur filters, input scaling and heads). Only those files are read, with
``torch.load(weights_only=True)``; none of that package's code is imported (it needs torchvision).
``tests/codec/test_perceptual*.py`` checks the output against values the package itself computed.

Report ST-LPIPS with ``net="alex"``; train with ``net="vgg"`` (never evaluate on the training net).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from codec.errors import CheckpointError, InputImageError

__all__ = ["STLPIPS", "BlurPool", "save_weights", "to_unit_range", "weights_path"]

NetName = Literal["alex", "vgg"]

# Layer recipes. Integers are conv output widths; tuples are (kernel, padding); "relu";
# ("max", k) is a stride-1 max-pool; "blur" an anti-aliased stride-2 down-sampling.
# Each stage's output is one LPIPS layer. Positions match the weight files' numbering.
_ALEX: list[list] = [
    [(64, 11, 2), "blur", "relu"],
    [("max", 3), "blur", (192, 5, 2), "relu"],
    [("max", 3), "blur", (384, 3, 1), "relu"],
    [(256, 3, 1), "relu"],
    [(256, 3, 1), "relu"],
]
_VGG: list[list] = [
    [(64, 3, 1), "relu", (64, 3, 1), "relu"],
    [("max", 2), "blur", (128, 3, 1), "relu", (128, 3, 1), "relu"],
    [("max", 2), "blur", *[(256, 3, 1), "relu"] * 3],
    [("max", 2), "blur", *[(512, 3, 1), "relu"] * 3],
    [("max", 2), "blur", *[(512, 3, 1), "relu"] * 3],
]
_RECIPES: dict[str, list[list]] = {"alex": _ALEX, "vgg": _VGG}
_FILES = {"alex": "alex_shift_tolerant.pth", "vgg": "vgg_shift_tolerant.pth"}
MIN_SIDE = {"alex": 21, "vgg": 18}
"""Smallest image side accepted; below it the deepest reflection pad has nothing to reflect."""


class BlurPool(nn.Module):
    """Anti-aliased down-sampling by 2: reflect-pad 2, depthwise 3×3 binomial blur, stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (2, 2, 2, 2), mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=x.shape[1])  # (N, C, ~H/2, ~W/2)


def _build_stage(recipe: list, start: int, channels: int) -> tuple[nn.Sequential, int]:
    """One LPIPS stage; modules are named by their global position, as in the weight files."""
    layers: dict[str, nn.Module] = {}
    for offset, step in enumerate(recipe):
        if step == "relu":
            layer: nn.Module = nn.ReLU()
        elif step == "blur":
            layer = BlurPool(channels)
        elif step[0] == "max":
            layer = nn.MaxPool2d(kernel_size=step[1], stride=1)
        else:
            width, kernel, padding = step
            layer = nn.Conv2d(channels, width, kernel_size=kernel, padding=padding)
            channels = width
        layers[str(start + offset)] = layer
    return nn.Sequential(OrderedDict(layers)), channels


def weights_path(net: NetName) -> Path:
    """The weight file for ``net``: in ``$DITIC_STLPIPS_DIR`` if set (a ``.safetensors`` copy made by
    :func:`save_weights` first, else the ``.pth``), else the installed ``stlpips-pytorch`` package's
    ``.pth`` (located without importing the package)."""
    if net not in _FILES:
        raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
    folder = os.environ.get("DITIC_STLPIPS_DIR")
    if folder:
        compact = Path(folder) / _FILES[net].replace(".pth", ".safetensors")
        path = compact if compact.is_file() else Path(folder) / _FILES[net]
    else:
        spec = importlib.util.find_spec("stlpips_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(
                "ST-LPIPS weights not found: `pip install --no-deps stlpips-pytorch==0.0.2` "
                f"or set DITIC_STLPIPS_DIR to a folder holding {_FILES[net]}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "vST0.0" / _FILES[net]
    if not path.is_file():
        raise CheckpointError(f"ST-LPIPS weight file missing: {path}")
    return path


def _rename(key: str) -> str:
    """Weight-file key -> ours: ``net.sliceK.i.*`` -> ``stages.(K-1).i.*``, ``linK.model.1.*`` ->
    ``heads.K.*``, ``scaling_layer.*`` -> ``*``."""
    if m := re.fullmatch(r"net\.slice(\d)\.(.+)", key):
        return f"stages.{int(m[1]) - 1}.{m[2]}"
    if m := re.fullmatch(r"lin(\d)\.model\.1\.(.+)", key):
        return f"heads.{m[1]}.{m[2]}"
    return key.removeprefix("scaling_layer.")


class STLPIPS(nn.Module):
    """Shift-tolerant LPIPS distance. Inputs ``(N, 3, H, W)`` in [-1, 1]; output ``(N,)``.

    All parameters are frozen; gradients flow to the inputs, so it serves as a training loss.
    """

    def __init__(self, net: NetName = "alex", weights: str | Path | None = None) -> None:
        super().__init__()
        if net not in _RECIPES:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))
        stages, widths, start, channels = [], [], 0, 3
        for recipe in _RECIPES[net]:
            stage, channels = _build_stage(recipe, start, channels)
            stages.append(stage)
            widths.append(channels)
            start += len(recipe)
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in widths)
        self._load(Path(weights) if weights is not None else weights_path(net))
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: Path) -> None:
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unpickling failure means a bad file
            raise CheckpointError(f"cannot read ST-LPIPS weights {path}: {e}") from e
        state = {_rename(k): v.float() for k, v in _dequantize(state).items()}
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
            raise CheckpointError(f"{path} does not fit ST-LPIPS-{self.net}: {e}") from e

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised (over channels) features of each stage for images in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputImageError(f"expected (N, 3, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIDE[self.net]:
            raise InputImageError(
                f"ST-LPIPS-{self.net} needs both sides >= {MIN_SIDE[self.net]} px, got {tuple(x.shape[-2:])}"
            )
        h = (x - self.shift) / self.scale
        out = []
        for stage in self.stages:
            h = stage(h)
            norm = h.pow(2).sum(dim=1, keepdim=True).sqrt()
            out.append(h / (norm + 1e-10))
        return out

    def distance(self, feats0: list[torch.Tensor], feats1: list[torch.Tensor]) -> torch.Tensor:
        """ST-LPIPS from two :meth:`features` results, ``(N,)``; lets a caller reuse the
        reference image's features across many reconstructions."""
        total = 0.0
        for head, f0, f1 in zip(self.heads, feats0, feats1, strict=True):
            total = total + head((f0 - f1).pow(2)).mean(dim=(1, 2, 3))
        return total

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        if x0.shape != x1.shape:
            raise InputImageError(f"images differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}")
        return self.distance(self.features(x0), self.features(x1))


INT8_SCALE = ".int8_scale"  # key suffix of the per-output-channel scale of an int8 weight


def save_weights(net: NetName, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """A compact ``.safetensors`` copy of ``net``'s weights in ``dtype`` (VGG: 59 MB -> 29 MB in
    float16, 15 MB in int8), for machines without the ``stlpips-pytorch`` package; point
    ``DITIC_STLPIPS_DIR`` at its folder (name it ``<net>_shift_tolerant.safetensors``). Loading
    upcasts to float32. ``torch.int8`` stores each convolution weight symmetrically quantized per
    output channel (float16 scales; everything else float16). Distances move by ~1e-4 in float16
    and by more in int8 (tests/codec/test_perceptual.py bounds both): fine for a training loss, not
    for reporting."""
    from safetensors.torch import save_file

    state = {}
    for k, v in STLPIPS(net).state_dict().items():
        if dtype == torch.int8 and k.startswith("stages.") and k.endswith(".weight") and v.dim() == 4:
            scale = v.abs().amax(dim=(1, 2, 3)).clamp(min=1e-12) / 127
            state[k] = torch.round(v / scale[:, None, None, None]).clamp(-127, 127).to(torch.int8)
            state[k + INT8_SCALE] = scale.half()
        else:
            state[k] = v.to(torch.float16 if dtype == torch.int8 else dtype).contiguous()
    path = Path(path)
    save_file(state, str(path), metadata={"what": f"ST-LPIPS-{net}", "source": "stlpips-pytorch 0.0.2"})
    return path


def _dequantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Int8 weights written by ``save_weights(..., torch.int8)`` back to float32; others unchanged."""
    out = {}
    for key, value in state.items():
        if key.endswith(INT8_SCALE):
            continue
        scale = state.get(key + INT8_SCALE)
        if scale is not None:
            value = value.float() * scale.float().view(-1, *([1] * (value.dim() - 1)))
        out[key] = value
    return out


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8-valued ``(N, 3, H, W)`` on 0–255 -> float in [-1, 1], the range :class:`STLPIPS` expects."""
    return images.float() / 127.5 - 1.0
