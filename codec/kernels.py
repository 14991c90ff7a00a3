"""Two Triton kernels for the compiled DC-AE decoder on a GPU, as torch custom ops (``torch.ops.ditic.*``).

Inductor left two of the decoder's operations far from what the card can do (docs/BENCHMARKS.md,
session 18; its generated code read back from the H200):

- **Depthwise convolutions** (the EfficientViT blocks' 5×5 ``proj_in`` and 3×3 ``conv_depth``). cuDNN
  runs them in generic kernels; written as shifted sums for inductor to fuse (``codec.fastvit``), they
  came out slower still: inductor laid the padded input out with rows innermost (every load strode by
  the row count), and recomputed the SiLU before the GLUMBConv's depthwise conv once per tap.
  ``depthwise_conv`` reads (B, H, W, C) rows with the channels innermost, each tap one coalesced load.
- **The decoder's last RMSNorm** (``norm_out``, over 128 channels at full resolution). Inductor fused it
  with the residual sum before it into one reduction kernel that stored that sum with the channels
  strided by the image width: 6.3 ms at 2048², where its bytes at the card's bandwidth come to ~0.5 ms
  (counted, not timed). ``rms_norm`` takes (..., C) rows, channels contiguous.

Each op is opaque to inductor, which hands it its inputs in the strides it was traced with (channels-last
for the compiled decoder), so the tensors around it keep that layout too. On a CPU (tests, the eager
fallback) the same ops run plain torch: ``F.conv2d``, and diffusers' RMSNorm arithmetic. Both compute
in float32 and round once; against cuDNN and diffusers only rounding differs (GPU test in
``tests/codec/test_gpu_fastpath.py``; the Triton code also runs in Triton's interpreter,
``tests/codec/test_kernels.py``, where Triton is installed).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["depthwise_conv", "rms_norm", "triton_ok"]

# the depthwise kernel's tile: (pixels of a row, channels, warps) per program. tools/kernel_bench.py on an
# H200, the decoder's six depthwise shapes at 2048², bf16, summed: 3.11 ms at 64x64x4 against 4.07 ms at
# 16x64x4 and 3.92 ms for cuDNN (session 18; 3.23-3.58 ms for the other tiles tried)
DEPTHWISE_TILE = (64, 64, 4)


@functools.cache
def _triton():  # noqa: ANN202
    import triton
    import triton.language as tl

    @triton.jit
    def depthwise_kernel(x_ptr, w_ptr, b_ptr, out_ptr, H, W, C,  # noqa: ANN001
                         KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
                         BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
        # one program: one output row (of one image), BLOCK_W pixels of it, BLOCK_C channels. The row's
        # base address is an int64 scalar; offsets within a row (W * C < 2^31) are int32.
        row = tl.program_id(0)
        n, h = row // H, row % H
        ws = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)[:, None]
        cs = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
        cmask = cs < C
        row_len = W * C
        image = x_ptr + n.to(tl.int64) * H * row_len
        acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        for i in tl.static_range(KH):
            hi = h + i - (KH - 1) // 2
            src = image + hi.to(tl.int64) * row_len
            in_rows = (hi >= 0) & (hi < H)
            for j in tl.static_range(KW):
                wj = ws + j - (KW - 1) // 2
                mask = in_rows & (wj >= 0) & (wj < W) & cmask
                v = tl.load(src + wj * C + cs, mask=mask, other=0.0)
                t = tl.load(w_ptr + (i * KW + j) * C + cs, mask=cmask, other=0.0)
                acc += v.to(tl.float32) * t
        if HAS_BIAS:
            acc += tl.load(b_ptr + cs, mask=cmask, other=0.0)
        dst = out_ptr + row.to(tl.int64) * row_len
        tl.store(dst + ws * C + cs, acc.to(out_ptr.dtype.element_ty), mask=(ws < W) & cmask)

    @triton.jit
    def rms_norm_kernel(x_ptr, w_ptr, b_ptr, out_ptr, rows, C, eps,  # noqa: ANN001
                        HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
        rs = (tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R))[:, None]
        cs = tl.arange(0, BLOCK_C)[None, :]
        mask = (rs < rows) & (cs < C)
        x = tl.load(x_ptr + rs * C + cs, mask=mask, other=0.0).to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=1)[:, None] / C + eps)
        y = x * inv * tl.load(w_ptr + cs, mask=cs < C, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y += tl.load(b_ptr + cs, mask=cs < C, other=0.0).to(tl.float32)
        tl.store(out_ptr + rs * C + cs, y.to(out_ptr.dtype.element_ty), mask=mask)

    return triton, depthwise_kernel, rms_norm_kernel


def triton_ok(x: Tensor) -> bool:
    """Whether ``x``'s ops take the Triton kernels: a CUDA tensor (or any, in Triton's interpreter) and
    Triton importable; ``DITIC_TRITON=0`` turns them off."""
    if os.environ.get("DITIC_TRITON", "1") == "0":
        return False
    if not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        return False
    try:
        _triton()
    except ImportError:
        return False
    return True


# --- depthwise convolution ------------------------------------------------------------------------
@torch.library.custom_op("ditic::depthwise_conv", mutates_args=())
def depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A stride-1 depthwise convolution (groups = channels, weight (C, 1, k, k), k odd, zero padding
    (k - 1) / 2) of ``x`` (B, C, H, W); the output is channels-last."""
    if not triton_ok(x):
        out = F.conv2d(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype),
                       padding=(weight.shape[2] // 2, weight.shape[3] // 2), groups=x.shape[1])  # fmt: skip
        return out.contiguous(memory_format=torch.channels_last)
    triton, kernel, _ = _triton()
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    rows = x.permute(0, 2, 3, 1).contiguous()  # a view where x is channels-last
    taps = weight[:, 0].permute(1, 2, 0).contiguous().to(torch.float32)  # (kh, kw, C)
    bias32 = taps if bias is None else bias.to(torch.float32).contiguous()
    out = torch.empty((b, h, w, c), dtype=x.dtype, device=x.device)
    block_w, block_c, warps = DEPTHWISE_TILE
    grid = (b * h, triton.cdiv(w, block_w), triton.cdiv(c, block_c))
    kernel[grid](rows, taps, bias32, out, h, w, c, KH=kh, KW=kw, HAS_BIAS=bias is not None,
                 BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps)  # fmt: skip
    return out.permute(0, 3, 1, 2)


@depthwise_conv.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


# --- RMSNorm over the last dimension ----------------------------------------------------------------
@torch.library.custom_op("ditic::rms_norm", mutates_args=())
def rms_norm(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """x / sqrt(mean(x², -1) + eps) · weight (+ bias) over ``x``'s last dimension (diffusers' RMSNorm
    with an affine weight), in float32, rounded to x's dtype once; the output is contiguous."""
    if not triton_ok(x):
        x32 = x.to(torch.float32)
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.to(torch.float32)
        return (y if bias is None else y + bias.to(torch.float32)).to(x.dtype).contiguous()
    triton, _, kernel = _triton()
    c = x.shape[-1]
    rows = x.contiguous()
    out = torch.empty_like(rows)
    n = rows.numel() // c
    block_c = triton.next_power_of_2(c)
    block_r = max(1, 4096 // block_c)
    kernel[(triton.cdiv(n, block_r),)](rows, weight, weight if bias is None else bias, out, n, c, eps,
                                       HAS_BIAS=bias is not None, BLOCK_R=block_r, BLOCK_C=block_c,
                                       num_warps=4)  # fmt: skip
    return out


@rms_norm.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)
