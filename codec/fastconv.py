"""Float64 convolutions as matrix products, for the entropy-parameter path on a GPU.

The path that computes the Gaussian parameters of y runs in float64 on both sides (DESIGN.md Sec. 2),
and cuDNN's float64 convolutions are slow direct kernels: at 1024² they took ~80 % of a decode on an
H200 (docs/BENCHMARKS.md). cuBLAS's float64 GEMM uses the FP64 tensor cores, so a 1×1 convolution is
one batched GEMM, a k×k one an im2col (``unfold``) and a GEMM, and a depthwise one k² multiply-adds.
Only the summation order changes: results agree with ``F.conv2d`` to float64 rounding (~1e-16), far
inside the index guard's margin (``codec.entropy``), so payloads stay decodable across devices.

``Float64Conv2d`` keeps its weights in the originals' (narrower) dtype and casts them to float64 at each
call. Every float32 (or bfloat16, float16) value is a float64 value, so the cast is exact and the
convolution computes bit for bit what a float64 copy of the weights computes, with half the resident
memory for float32 originals (ditic-official's entropy path: 0.79 -> 0.40 GiB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Float64Conv2d", "GemmConv2d", "conv2d_gemm", "use_float64_convs", "use_gemm_convs"]


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pointwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    b, c, h, w = x.shape
    out = torch.matmul(weight.reshape(weight.shape[0], c), x.reshape(b, c, h * w))
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(b, -1, h, w)


def _depthwise(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    kh, kw = weight.shape[-2:]
    h, w = x.shape[-2] + 2 * padding[0] - kh + 1, x.shape[-1] + 2 * padding[1] - kw + 1
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    out = torch.zeros(x.shape[0], x.shape[1], h, w, dtype=x.dtype, device=x.device)
    for i in range(kh):
        for j in range(kw):
            out.addcmul_(xp[:, :, i : i + h, j : j + w], weight[:, 0, i, j][None, :, None, None])
    return out if bias is None else out + bias[None, :, None, None]


def _im2col(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple, padding: tuple) -> Tensor:
    kh, kw = weight.shape[-2:]
    h = (x.shape[-2] + 2 * padding[0] - kh) // stride[0] + 1
    w = (x.shape[-1] + 2 * padding[1] - kw) // stride[1] + 1
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (B, C*kh*kw, h*w)
    out = torch.matmul(weight.reshape(weight.shape[0], -1), cols)
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(x.shape[0], -1, h, w)


def conv2d_gemm(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: int | tuple = 1, padding: int | tuple = 0,
    dilation: int | tuple = 1, groups: int = 1,
) -> Tensor:  # fmt: skip
    """``F.conv2d`` (zero padding) by GEMMs where the shape allows; other cases go to ``F.conv2d``."""
    if isinstance(padding, str):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw = weight.shape[-2:]
    if dilation != (1, 1):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    if groups == 1 and (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return _pointwise(x, weight, bias)
    if groups == 1:
        return _im2col(x, weight, bias, stride, padding)
    if groups == x.shape[1] == weight.shape[0] and stride == (1, 1):
        return _depthwise(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _gemm_wanted(x: Tensor) -> bool:
    """Whether a convolution of ``x`` takes ``conv2d_gemm``: float64 on a GPU. (A function of its own, so
    that a CPU test can route the GEMM forms through it.)"""
    return x.dtype == torch.float64 and x.is_cuda


class GemmConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, same state dict) that uses ``conv2d_gemm`` for float64 input on
    a GPU and ``F.conv2d`` everywhere else."""

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros" or not _gemm_wanted(x):
            return super().forward(x)
        return conv2d_gemm(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Float64Conv2d(GemmConv2d):
    """A ``GemmConv2d`` that computes in float64 from weights kept in their own dtype (float32 for the
    entropy path's originals): each call casts weight and bias to float64, exactly, and runs the same
    convolution (``conv2d_gemm`` for a GPU, ``F.conv2d`` elsewhere) as a float64 copy of the module would,
    on the same values. Inside a CUDA graph the casts are captured with the rest: the graph reads the
    weights' own storage at each replay."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.to(torch.float64)
        bias = None if self.bias is None else self.bias.to(torch.float64)
        if self.padding_mode != "zeros" or not _gemm_wanted(x):
            return self._conv_forward(x, weight, bias)
        return conv2d_gemm(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def use_gemm_convs(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Conv2d`` inside ``module`` into a ``GemmConv2d`` in place; returns it."""
    for child in module.modules():
        if type(child) is nn.Conv2d:
            child.__class__ = GemmConv2d
    return module


def use_float64_convs(module: nn.Module) -> nn.Module:
    """Make ``module`` compute in float64 (it then takes float64 inputs) as ``module.to(torch.float64)``
    followed by ``use_gemm_convs`` would, bit for bit, but without the float64 copies of its convolutions'
    weights: every plain ``nn.Conv2d`` (or ``GemmConv2d``) becomes a ``Float64Conv2d`` that keeps its
    weights as they are and casts them at each call. Any other floating-point parameter or buffer (none
    in the entropy path) is cast to float64 in place. Returns ``module``."""
    for child in module.modules():
        if type(child) in (nn.Conv2d, GemmConv2d):
            child.__class__ = Float64Conv2d
            continue
        if isinstance(child, Float64Conv2d):
            continue
        for p in child.parameters(recurse=False):
            if p.is_floating_point():
                p.data = p.data.to(torch.float64)
        for name, b in child.named_buffers(recurse=False):
            if b is not None and b.is_floating_point():
                setattr(child, name, b.to(torch.float64))
    return module
