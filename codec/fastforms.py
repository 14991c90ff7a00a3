"""Faster forms of DC-AE and DiT parts under ``torch.compile``: same parameters, same math, other kernels.

A profile of the compiled ditic-official decoder at 2048² on an H200 (docs/BENCHMARKS.md, sessions 17-18)
put ~30 of its 97 ms in operations that cuDNN, cuBLAS or inductor ran far from what the card can do:

- the **depthwise** convolutions (the multiscale 5×5 ``proj_in``, the GLUMBConv's 3×3 ``conv_depth``):
  cuDNN's generic kernels. They go to ``codec.kernels.depthwise_conv``, a Triton kernel on channels-last
  rows;
- the **grouped 1×1** ``proj_out`` (groups = 3 × heads): cuDNN slices it group by group (thousands of
  launches). As one batched matrix product over the groups it is a single GEMM;
- the linear attention's **[v; 1] kᵀ** sums, float32, a (d+1)×d output per head over all h·w pixels:
  cuBLAS ran them as one narrow FFMA GEMM per head with a K of h·w (0.9 ms each). Summed in chunks of
  the pixels (``kv_sums``) the batch is wide enough to fill the card. The SANA DiT's linear attention
  (``DiTLinearAttnProcessor``) makes the same sums over its tokens, and gets the same treatment;
- the decoder's last **RMSNorm** (``norm_out``): inductor fused it with the residual sum before it and
  stored that sum with strided channels (6.3 ms). It goes to ``codec.kernels.rms_norm``;
- the **nearest x2 upsample then 3x3 conv** of the upsample blocks: as four 2x2 phase convs at the low
  resolution (``upsample_conv``), 2.25x fewer FLOPs, the upsampled input never stored.

Only rounding and summation order differ from diffusers' modules (``tests/codec/test_fastforms.py``: the
same output in float32 to ~1e-6). The fast forms are taken only while ``torch.compile`` traces
(``torch.compiler.is_compiling``) with grad off: eager (the CPU fallback, the float32 references) and
anything that needs gradients run diffusers' modules as before (``active``). ``use_fast_forms`` swaps
the classes of a DC-AE's or DiT's modules in place; parameter names, the state dict and so the model id
stay as they are. ``DITIC_FAST_FORMS=0`` turns it off (a same-run baseline).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec import kernels

__all__ = ["DepthwiseConv2d", "DiTLinearAttnProcessor", "GroupedPointwiseConv2d", "LinearAttnProcessor",
           "attend", "kv_sums", "phase_ok", "qkv", "rms_norm_class", "up_block_class", "upsample_conv",
           "upsample_conv_pairs", "use_fast_forms"]  # fmt: skip

# pixels per chunk of the [v; 1] k^T sums: wide enough for a GEMM, short enough that heads x chunks fill the
# card (2048² at 1/16: 16,384 pixels -> 64 chunks per head)
KV_CHUNK = 256


def active() -> bool:
    """Whether the fast forms apply: while ``torch.compile`` traces, for inference (grad off). With grad on
    (training, or a caller that forgot ``no_grad``) diffusers' modules run: the Triton ops have no
    backward."""
    return torch.compiler.is_compiling() and not torch.is_grad_enabled()


def grouped_pointwise(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int) -> Tensor:
    """A grouped 1×1 convolution as one matrix product batched over the groups."""
    b, c, h, w = x.shape
    out_c = weight.shape[0]
    xs = x.permute(0, 2, 3, 1).reshape(b * h * w, groups, c // groups).transpose(0, 1)  # (G, BN, c)
    ws = weight.reshape(groups, out_c // groups, c // groups).transpose(1, 2)  # (G, c, o)
    out = torch.bmm(xs, ws).transpose(0, 1).reshape(b, h, w, out_c)
    if bias is not None:
        out = out + bias
    return out.permute(0, 3, 1, 2)


class DepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` with groups = in = out channels (odd kernel, padding its radius) that runs as
    ``codec.kernels.depthwise_conv`` under compile."""

    def forward(self, x: Tensor) -> Tensor:
        if not active() or self.padding_mode != "zeros":
            return super().forward(x)
        return kernels.depthwise_conv(x, self.weight, self.bias)


class GroupedPointwiseConv2d(nn.Conv2d):
    """A grouped 1×1 ``nn.Conv2d`` that runs as ``grouped_pointwise`` under compile."""

    def forward(self, x: Tensor) -> Tensor:
        if not active():
            return super().forward(x)
        return grouped_pointwise(x, self.weight, self.bias, self.groups)


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return (conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and not isinstance(conv.padding, str)
            and all(k % 2 and p == (k - 1) // 2
                    for p, k in zip(conv.padding, conv.kernel_size, strict=True)))  # fmt: skip


def _is_grouped_pointwise(conv: nn.Conv2d) -> bool:
    return (conv.groups > 1 and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding in ((0, 0), "valid"))  # fmt: skip


# --- nearest x2 upsampling then a 3x3 conv, at the low resolution ----------------------------------------
#
# After a nearest x2 upsample, output rows 2i-1 and 2i of a 3x3 conv (padding 1) both see only input rows
# i-1 and i: row 2i-1 as x[i-1]·(W0+W1) + x[i]·W2, row 2i as x[i-1]·W0 + x[i]·(W1+W2), and columns
# alike. So the four output phases are 2x2 convs of the low-resolution input, one conv with 4x the output
# channels, then a pixel shuffle: 2x2 taps at 1/4 of the pixels against 3x3 taps at all of them, 2.25x
# fewer FLOPs (ditic-official at 2048², counted: 6.2 of the local part's ~28 TFLOP are these convs), and
# the x4 upsampled input is never stored. Summation order and the tap sums' rounding are all that differ.
_PAIRS = ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)), ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0))  # (phase, tap, 3x3 row)


def phase_weights(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """A 3x3 conv's (O, C, 3, 3) weight as the (4 O, C, 2, 2) weight of its four phases after a nearest
    x2 upsample, in ``pixel_shuffle``'s channel order (o, row phase, column phase), and its bias."""
    m = torch.tensor(_PAIRS, dtype=weight.dtype, device=weight.device)
    k = torch.einsum("rui,ocij,svj->orscuv", m, weight, m)
    return k.reshape(weight.shape[0] * 4, weight.shape[1], 2, 2), (
        None if bias is None else bias.repeat_interleave(4))  # fmt: skip


def upsample_conv_pairs(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv(nearest_x2(rows))`` for a 3x3 ``conv`` (padding 1 across columns), where ``x`` (B, C, n, w)
    holds n input rows: 2 (n - 1) output rows, those that see only these rows (rows 2i-1 and 2i for
    each consecutive pair i-1, i of x's rows), all 2 w columns."""
    k, b = phase_weights(weight, bias)
    out = F.pixel_shuffle(F.conv2d(x, k.to(x.dtype), None if b is None else b.to(x.dtype), padding=(0, 1)), 2)
    return out[..., 1 : 1 + 2 * x.shape[-1]]


def upsample_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv(nearest_x2(x))`` for a 3x3 ``conv`` with padding 1 (see above)."""
    out = upsample_conv_pairs(F.pad(x, (0, 0, 1, 1)), weight, bias)
    return out[:, :, 1 : 1 + 2 * x.shape[-2]]


def phase_ok(block: nn.Module) -> bool:
    """Whether a DC-AE ``DCUpBlock2d`` is a nearest x2 upsample then a 3x3, stride 1, padding 1 conv."""
    conv = block.conv
    return (block.interpolate and block.interpolation_mode == "nearest" and block.factor == 2
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")  # fmt: skip


@functools.cache
def up_block_class() -> type:
    """``PhaseUpBlock2d``: diffusers' ``DCUpBlock2d`` that, under compile, runs ``upsample_conv``."""
    from diffusers.models.autoencoders.autoencoder_dc import DCUpBlock2d

    class PhaseUpBlock2d(DCUpBlock2d):
        phase_convs = True  # (what the carried strips check: calling up_block_class() there would be traced)

        def forward(self, hidden_states: Tensor) -> Tensor:
            if not (active() and phase_ok(self)):
                return super().forward(hidden_states)
            x = upsample_conv(hidden_states, self.conv.weight, self.conv.bias)
            if not self.shortcut:
                return x
            reps = self.repeats
            y = hidden_states.repeat_interleave(reps, dim=1, output_size=hidden_states.shape[1] * reps)
            return x + F.pixel_shuffle(y, self.factor)

    return PhaseUpBlock2d


# --- the linear attention --------------------------------------------------------------------------
def qkv(attn: nn.Module, x: Tensor) -> Tensor:
    """diffusers' multiscale q, k, v of ``x`` (B, C, h, w), upcast to float32: (B, heads, 3 d, h w)."""
    b, _, h, w = x.shape
    t = x.movedim(1, -1)
    out = torch.cat([attn.to_q(t), attn.to_k(t), attn.to_v(t)], dim=3).movedim(-1, 1)
    scales = [out]  # (a loop, not a comprehension: dynamo cannot trace deleting a closure cell)
    for proj in attn.to_qkv_multiscale:
        scales.append(proj(out))
    del out
    scales = torch.cat(scales, dim=1)
    return scales.to(torch.float32).reshape(b, -1, 3 * attn.attention_head_dim, h * w)


def _chunk(n: int) -> int:
    """The chunk length for ``kv_sums``: the smallest divisor of n that is at least KV_CHUNK (or n)."""
    for size in range(min(KV_CHUNK, n), n + 1):
        if n % size == 0:
            return size
    return n


def kv_sums(key: Tensor, value: Tensor, chunked: bool | None = None) -> Tensor:
    """Each head's [v; 1] kᵀ over the pixels (B, G, d+1, d) from activated keys and values (B, G, d, N):
    diffusers' ``matmul(pad(v, 1), kᵀ)``. ``chunked`` (default: under compile) takes the pixels in chunks
    of ``_chunk(N)``, each a small product of one batched GEMM, then sums them."""
    b, g, d, n = key.shape
    chunked = active() if chunked is None else chunked
    if chunked and (size := _chunk(n)) < n:
        s = n // size
        vs = value.reshape(b, g, d, s, size).transpose(2, 3)  # (B, G, S, d, L)
        ks = key.reshape(b, g, d, s, size).transpose(2, 3)
        sums = torch.matmul(vs, ks.transpose(-1, -2)).sum(dim=2)
    else:
        sums = torch.matmul(value, key.transpose(-1, -2))
    return torch.cat([sums, key.sum(dim=-1)[:, :, None]], dim=2)


def attend(attn: nn.Module, query: Tensor, sums: Tensor, x: Tensor) -> Tensor:
    """The attention's output on ``x`` (B, C, h, w) from its activated queries (B, G, d, N) and the sums:
    diffusers' ``SanaMultiscaleAttnProcessor2_0`` linear branch after the products, with its output
    projection, norm and residual."""
    b, _, h, w = x.shape
    y = torch.matmul(sums, query).to(torch.float32)
    del query
    y = (y[:, :, :-1] / (y[:, :, -1:] + attn.eps)).to(x.dtype).reshape(b, -1, h, w)
    y = attn.to_out(y.movedim(1, -1)).movedim(-1, 1)
    if attn.norm_type == "rms_norm":
        y = attn.norm_out(y.movedim(1, -1)).movedim(-1, 1)
    else:
        y = attn.norm_out(y)
    return y + x if attn.residual_connection else y


class LinearAttnProcessor:
    """diffusers' ``SanaMultiscaleAttnProcessor2_0`` through ``qkv``, ``kv_sums`` and ``attend`` (and its
    own quadratic branch where h·w is at most the head width)."""

    def __call__(self, attn: nn.Module, hidden_states: Tensor) -> Tensor:
        from diffusers.models.attention_processor import SanaMultiscaleAttnProcessor2_0

        h, w = hidden_states.shape[-2:]
        if h * w <= attn.attention_head_dim:
            return SanaMultiscaleAttnProcessor2_0()(attn, hidden_states)
        query, key, value = qkv(attn, hidden_states).chunk(3, dim=2)
        sums = kv_sums(attn.nonlinearity(key), value)
        del key, value
        return attend(attn, attn.nonlinearity(query), sums, hidden_states)


@functools.cache
def rms_norm_class() -> type:
    """``ChannelsLastRMSNorm``: diffusers' ``RMSNorm`` (made on first use: diffusers loads lazily) that
    runs as ``codec.kernels.rms_norm`` under compile where it has its affine weight."""
    from diffusers.models.normalization import RMSNorm

    class ChannelsLastRMSNorm(RMSNorm):
        def forward(self, hidden_states: Tensor) -> Tensor:
            if not active() or self.weight is None:
                return super().forward(hidden_states)
            return kernels.rms_norm(hidden_states, self.weight, self.bias, self.eps)

    return ChannelsLastRMSNorm


class DiTLinearAttnProcessor:
    """diffusers' ``SanaLinearAttnProcessor2_0`` (the SANA DiT's self-attention) with its [v; 1] kᵀ sums
    through ``kv_sums``: at 2048² the DiT's 4,096 tokens made the same narrow float32 GEMM per layer."""

    def __call__(self, attn: nn.Module, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None) -> Tensor:  # fmt: skip
        dtype = hidden_states.dtype
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        def heads(t: Tensor) -> Tensor:  # (B, N, C) -> (B, heads, d, N)
            return t.transpose(1, 2).unflatten(1, (attn.heads, -1))

        query, key = torch.relu(heads(query)).float(), torch.relu(heads(key)).float()
        sums = kv_sums(key, heads(value).float())
        del key, value
        y = torch.matmul(sums, query)
        y = (y[:, :, :-1] / (y[:, :, -1:] + 1e-15)).flatten(1, 2).transpose(1, 2).to(dtype)
        y = attn.to_out[1](attn.to_out[0](y))
        return y.clip(-65504, 65504) if dtype == torch.float16 else y


def enabled() -> bool:
    return os.environ.get("DITIC_FAST_FORMS", "1") != "0"


def use_fast_forms(module: nn.Module) -> nn.Module:
    """Give ``module`` (a DC-AE, its encoder or decoder, or the SANA DiT) its fast forms, in place: every
    depthwise and grouped 1×1 convolution, every linear attention's processor (EfficientViT's, SANA's),
    each DC-AE decoder's last norm, and its nearest-upsample blocks. Returns it. A no-op where
    ``DITIC_FAST_FORMS=0``."""
    from diffusers.models.attention_processor import (
        SanaLinearAttnProcessor2_0,
        SanaMultiscaleAttnProcessor2_0,
    )
    from diffusers.models.autoencoders.autoencoder_dc import DCUpBlock2d, Decoder
    from diffusers.models.normalization import RMSNorm

    if not enabled():
        return module
    for child in module.modules():
        if type(child) is nn.Conv2d and _is_depthwise(child):
            child.__class__ = DepthwiseConv2d
        elif type(child) is nn.Conv2d and _is_grouped_pointwise(child):
            child.__class__ = GroupedPointwiseConv2d
        elif type(getattr(child, "processor", None)) is SanaMultiscaleAttnProcessor2_0:
            child.processor = LinearAttnProcessor()
        elif type(getattr(child, "processor", None)) is SanaLinearAttnProcessor2_0:
            child.processor = DiTLinearAttnProcessor()
        elif isinstance(child, Decoder) and type(child.norm_out) is RMSNorm:
            child.norm_out.__class__ = rms_norm_class()
        elif type(child) is DCUpBlock2d and phase_ok(child):
            child.__class__ = up_block_class()
    return module
