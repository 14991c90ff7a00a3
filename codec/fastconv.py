"""Float64 convolutions as matrix products, for the entropy-parameter path on a GPU.

The path that computes the Gaussian parameters of y runs in float64 on both sides (DESIGN.md Sec. 2),
and cuDNN's float64 convolutions are slow direct kernels: at 1024² they took ~80 % of a decode on an
H200 (docs/BENCHMARKS.md). cuBLAS's float64 GEMM uses the FP64 tensor cores, so a 1×1 convolution is
one batched GEMM, a k×k one an im2col (``unfold``) and a GEMM, and a depthwise one k² multiply-adds.
Only the summation order changes: results agree with ``F.conv2d`` to float64 rounding (~1e-16), far
inside the index guard's margin (``codec.entropy``), so payloads stay decodable across devices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GemmConv2d", "conv2d_gemm", "use_gemm_convs"]


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


class GemmConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, same state dict) that uses ``conv2d_gemm`` for float64 input on
    a GPU and ``F.conv2d`` everywhere else."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.float64 or not x.is_cuda or self.padding_mode != "zeros":
            return super().forward(x)
        return conv2d_gemm(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def use_gemm_convs(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Conv2d`` inside ``module`` into a ``GemmConv2d`` in place; returns it."""
    for child in module.modules():
        if type(child) is nn.Conv2d:
            child.__class__ = GemmConv2d
    return module
