"""The latent codec's transforms: fusion analysis g_a, hyperprior h_a / h_s, four-step spatial context
with latent residual prediction (LRP), and the heads that turn y_hat into the DiT inputs
(mean, scale, res, prompt). ``model.LatentCodec`` assembles them under the release's names.

Module and parameter names follow the release (``codec.g_a.pre1.0.weight`` ...), so its checkpoint loads
key for key. The release aliases ``Downsample.down`` / ``Upsample.up`` as ``branch1``; both names appear in
its state dict and therefore in ours.

Shapes (release): DC-AE latent (B, 32, H/32, W/32) + aux features (B, 320, H/16, W/16)
-> y (B, M=320, H/64, W/64) -> z (B, N=160, H/256, W/256).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.config import CodecConfig
from codec.graphs import GraphCache, GraphPool

# Step k of the four-step context codes, in channel group g, the pixel at position ORDER[k][g] of each
# 2x2 block (0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right). Over four steps every channel
# group visits all four positions (DCVC-DC "quadtree" masks). The order is part of the release's bitstream.
ORDER = ((0, 1, 2, 3), (3, 2, 1, 0), (2, 3, 0, 1), (1, 0, 3, 2))


class WSiLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(4.0 * x)


class WSiLUChunkAdd(nn.Module):
    """Gated FFN activation: WSiLU, then the two channel halves summed."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = (x * torch.sigmoid(4.0 * x)).chunk(2, 1)
        return a + b


class DepthConvBlock(nn.Module):
    """1x1 -> WSiLU -> 3x3 depthwise -> 1x1 (residual), then gated FFN x4 (residual)."""

    def __init__(self, in_ch: int, out_ch: int, shortcut: bool = False):
        super().__init__()
        self.adaptor = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.shortcut = shortcut
        self.dc = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 1),
            WSiLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, groups=out_ch),
            nn.Conv2d(out_ch, out_ch, 1),
        )
        self.ffn = nn.Sequential(
            nn.Conv2d(out_ch, out_ch * 4, 1), WSiLUChunkAdd(), nn.Conv2d(out_ch * 2, out_ch, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.adaptor is not None:
            x = self.adaptor(x)
        out = self.dc(x) + x
        out = self.ffn(out) + out
        return out + x if self.shortcut else out


class Downsample(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.down = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
        self.branch1 = self.down

    def forward(self, x: Tensor) -> Tensor:
        return self.down(x)


class Upsample(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.up = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(in_ch, out_ch * 4, 1),
            nn.PixelShuffle(2),
        )
        self.branch1 = self.up

    def forward(self, x: Tensor) -> Tensor:
        return self.up(x)


class StridedBlock(nn.Module):
    """2x2 stride-2 conv, then a shortcut DepthConvBlock (hyper analysis stage)."""

    def __init__(self, ch: int):
        super().__init__()
        self.down = nn.Conv2d(ch, ch, 2, stride=2)
        self.conv = DepthConvBlock(ch, ch, shortcut=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.down(x))


class SubpelUp(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(ch, ch * 4, 1), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UpsampleBlock(nn.Module):
    """Sub-pixel x2, then a shortcut DepthConvBlock (hyper synthesis stage)."""

    def __init__(self, ch: int):
        super().__init__()
        self.up = SubpelUp(ch)
        self.conv = DepthConvBlock(ch, ch, shortcut=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.up(x))


class Adapter(nn.Module):
    """Three 3x3 convs with GELU, mid width ``mid`` (default (in + out) / 2)."""

    def __init__(self, in_ch: int, out_ch: int, mid: int | None = None):
        super().__init__()
        mid = mid or (in_ch + out_ch) // 2
        self.branch1 = nn.Sequential(
            nn.Conv2d(in_ch, mid, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(mid, out_ch, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.branch1(x)


class Blocks(nn.Module):
    """A ``block`` Sequential (release names ``g_c.block``, ``aux.block``, ``LRP.k.block``)."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class AnalysisTransform(nn.Module):
    """g_a: DC-AE latent (1/32) fused with aux features (1/16 -> 1/32), then stride 2 -> y at 1/64."""

    def __init__(self, latent_ch: int, aux_ch: int, fuse_latent: int, fuse_aux: int, M: int):
        super().__init__()
        width = fuse_latent + fuse_aux
        self.pre1 = nn.Sequential(nn.Conv2d(latent_ch, fuse_latent, 3, padding=1))
        self.pre2 = nn.Sequential(Downsample(aux_ch, fuse_aux))
        self.analysis_transform = nn.Sequential(
            DepthConvBlock(width, width),
            DepthConvBlock(width, width),
            Downsample(width, M),
            DepthConvBlock(M, M),
            DepthConvBlock(M, M),
        )

    def forward(self, latent: Tensor, aux: Tensor) -> Tensor:
        return self.analysis_transform(torch.cat((self.pre1(latent), self.pre2(aux)), dim=1))


class SynthesisTransform(nn.Module):
    """A head from 1/64 to 1/32: three DepthConvBlocks, x2 upsample, 3x3 conv."""

    def __init__(self, M: int, width: int, up_ch: int, out_ch: int):
        super().__init__()
        self.synthesis_transform = nn.Sequential(
            DepthConvBlock(M, width),
            DepthConvBlock(width, width),
            DepthConvBlock(width, width),
            Upsample(width, up_ch),
            nn.Conv2d(up_ch, out_ch, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.synthesis_transform(x)


class HyperAnalysis(nn.Module):
    def __init__(self, M: int):
        super().__init__()
        N = M // 2
        self.reduction = nn.Sequential(
            DepthConvBlock(M, M), DepthConvBlock(M, N), StridedBlock(N), StridedBlock(N)
        )

    def forward(self, y: Tensor) -> Tensor:
        return self.reduction(y)


class HyperSynthesis(nn.Module):
    def __init__(self, M: int):
        super().__init__()
        N = M // 2
        self.increase = nn.Sequential(
            UpsampleBlock(N), UpsampleBlock(N), DepthConvBlock(N, M), DepthConvBlock(M, M)
        )

    def forward(self, z_hat: Tensor) -> Tensor:
        return self.increase(z_hat)


def four_step_masks(C: int, H: int, W: int, device: torch.device, dtype: torch.dtype) -> list[Tensor]:
    """Four (1, C, H, W) 0/1 masks; mask k marks what step k codes (see ORDER). They partition y."""
    if C % 4:
        raise ValueError(f"channel count must be a multiple of 4, got {C}")
    rows = torch.arange(H, device=device) % 2
    cols = torch.arange(W, device=device) % 2
    position = rows[:, None] * 2 + cols[None, :]  # (H, W) in 0..3
    masks = []
    for order in ORDER:
        groups = [(position == p).to(dtype).expand(C // 4, H, W) for p in order]
        masks.append(torch.cat(groups, dim=0)[None])
    return masks


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom/right of (B, C, H, W) to multiples of ``multiple`` (z's own grid)."""
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def heads_from_config(cfg: CodecConfig) -> dict[str, nn.Module]:
    lat, ch = cfg.latent, cfg.vae.latent_channels
    w = lat.head_width
    return {
        "g_s": SynthesisTransform(lat.M, w, w, ch),
        "scale": SynthesisTransform(lat.M, w, lat.scale_head_width, ch),
        "prompt": SynthesisTransform(lat.M, w, w, lat.prompt_channels),
        "aux": Blocks(
            DepthConvBlock(lat.M, w), DepthConvBlock(w, w), Upsample(w, w), nn.Conv2d(w, ch, 3, padding=1)
        ),
    }


def context_from_config(cfg: CodecConfig) -> dict[str, nn.Module]:
    M, mid = cfg.latent.M, cfg.latent.context_width  # mid None: the release's widths
    C = mid or 2 * M
    return {
        "h_s": HyperSynthesis(M),
        "adapter_in": nn.ModuleList(Adapter(M, C, mid) for _ in range(4)),
        "g_c": Blocks(DepthConvBlock(C, C), DepthConvBlock(C, C), DepthConvBlock(C, C), nn.Conv2d(C, C, 1)),
        "adapter_out": nn.ModuleList(Adapter(C, 2 * M, mid) for _ in range(4)),
        "LRP": nn.ModuleList(Blocks(Adapter(2 * M, M, mid)) for _ in range(4)),
    }


CONTEXT_MODULES = ("h_s", "adapter_in", "g_c", "adapter_out", "LRP")


class EntropyPath(nn.Module):
    """h_s + four-step context + LRP: everything between z_hat and the Gaussian parameters of y.

    The codec runs this in float64 on a private copy at compress/decompress time, so encoder and decoder
    compute the same scales on any device (DESIGN.md Sec. 2); training uses the codec's own modules.
    """

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__()
        for name in CONTEXT_MODULES:
            setattr(self, name, modules[name])

    def use_cuda_graphs(self) -> EntropyPath:
        """Replay h_s and each step's parameter and LRP networks from CUDA graphs (inference only):
        the same kernels, launched at once instead of one by one from Python (``codec.graphs``). All of
        the path's graphs (nine per image size) allocate from one memory pool: they replay one after
        another, so the pool holds the largest one's working set (im2col columns, the convolutions'
        float64 weights cast at each call), not the sum of the nine."""
        self.__dict__["_graphs"] = {}
        self.__dict__["_graph_pool"] = GraphPool()
        return self

    def _run_net(self, name: str, fn, *inputs: Tensor) -> Tensor:  # noqa: ANN001
        graphs = self.__dict__.get("_graphs")
        if graphs is None:
            return fn(*inputs)
        if name not in graphs:
            graphs[name] = GraphCache(fn, name=f"entropy path {name}", pool=self.__dict__["_graph_pool"])
        return graphs[name](*inputs)

    def hyper(self, z_hat: Tensor, y_size: tuple[int, int]) -> Tensor:
        return self._run_net("h_s", self.h_s, z_hat)[..., : y_size[0], : y_size[1]]  # (B, M, h, w)

    def params(self, k: int, base: Tensor) -> tuple[Tensor, Tensor]:
        net = lambda b: self.adapter_out[k](self.g_c(self.adapter_in[k](b)))
        means, scales = self._run_net(f"params{k}", net, base).chunk(2, 1)
        return means, scales

    def refine(self, k: int, y_hat_k: Tensor, base: Tensor, mask: Tensor) -> Tensor:
        """Latent residual prediction: y_hat_k + 0.5 tanh(LRP([y_hat_k, base])) on the coded positions."""
        net = lambda y, b, m: y + 0.5 * torch.tanh(self.LRP[k](torch.cat([y, b], dim=1)) * m)
        return self._run_net(f"refine{k}", net, y_hat_k, base, mask)

    def run(self, z_hat: Tensor, y_size: tuple[int, int], code_step) -> tuple[Tensor, Tensor]:
        """The four steps. ``code_step(k, means, scales, mask) -> y_hat_k`` (zero off the mask) quantizes,
        codes or decodes. Returns (y_hat, scales used for each element of y)."""
        base = self.hyper(z_hat, y_size)
        masks = four_step_masks(base.shape[1], *y_size, base.device, base.dtype)
        y_hat = torch.zeros_like(base)
        y_scales = torch.zeros_like(base)
        for k, mask in enumerate(masks):
            means, scales = self.params(k, base)
            y_hat_k = self.refine(k, code_step(k, means, scales, mask), base, mask)
            base = base * (1 - mask) + y_hat_k
            y_hat = y_hat + y_hat_k
            y_scales = y_scales + scales * mask
        return y_hat, y_scales
