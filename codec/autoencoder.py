"""Pixel-domain transforms: the DC-AE (``diffusers.AutoencoderDC``) with a tiled decoder, and the
auxiliary analysis transform (ELIC ``g_a``) whose 1/16 features the latent codec fuses with the DC-AE latent.

Tiled decoding bounds memory at any size: the 1/32 latent is cut into overlapping tiles, each decoded
alone, and the pixel tiles are blended with linear ramps across the overlaps. The DC-AE's linear
attention is global, so a tiled decode differs slightly from a whole one; it is the default only above
``TILE_THRESHOLD`` latent pixels per side (2048 px).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from codec.config import CodecConfig

__all__ = ["build_vae", "decode_latent", "ElicAnalysis", "TILE_THRESHOLD"]

DOWNSCALE = 32
TILE_THRESHOLD = 64
TILE_SIZE = 32
TILE_OVERLAP = 8


def build_vae(cfg: CodecConfig) -> nn.Module:
    """``AutoencoderDC.from_config`` (never from a hub)."""
    from diffusers import AutoencoderDC

    return AutoencoderDC.from_config(cfg.vae.diffusers_config())


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(length: int, lead: int, trail: int, device: torch.device) -> Tensor:
    """1-D blend weights: rising over ``lead`` samples, flat, falling over ``trail`` samples."""
    w = torch.ones(length, device=device)
    if lead:
        w[:lead] = (torch.arange(lead, device=device) + 0.5) / lead
    if trail:
        w[length - trail :] = torch.minimum(
            w[length - trail :], (torch.arange(trail, 0, -1, device=device) - 0.5) / trail
        )
    return w


def _tile_weights(rows: list[int], cols: list[int], i: int, j: int, tile: tuple[int, int], dev) -> Tensor:
    """Pixel weights of tile (i, j): ramps only where it overlaps a neighbour."""
    th, tw = tile

    def edges(starts: list[int], k: int, size: int) -> tuple[int, int]:
        lead = (starts[k - 1] + size - starts[k]) * DOWNSCALE if k > 0 else 0
        trail = (starts[k] + size - starts[k + 1]) * DOWNSCALE if k + 1 < len(starts) else 0
        return lead, trail

    wy = _ramp(th * DOWNSCALE, *edges(rows, i, th), dev)
    wx = _ramp(tw * DOWNSCALE, *edges(cols, j, tw), dev)
    return wy[:, None] * wx[None, :]


def decode_latent(
    vae: nn.Module,
    latent: Tensor,
    tiled: bool | None = None,
    tile: int = TILE_SIZE,
    overlap: int = TILE_OVERLAP,
) -> Tensor:
    """DC-AE decode of an (unscaled) latent (B, C, h, w) -> (B, 3, 32h, 32w). ``tiled=None``: automatic."""
    h, w = latent.shape[-2:]
    if tiled is None:
        tiled = max(h, w) > TILE_THRESHOLD
    if not tiled or (h <= tile and w <= tile):
        return vae.decoder(latent)
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, {tile}), got {overlap}")
    rows, cols = _starts(h, tile, overlap), _starts(w, tile, overlap)
    out = total = None
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            piece = vae.decoder(latent[..., r : r + tile, c : c + tile])
            th, tw = piece.shape[-2] // DOWNSCALE, piece.shape[-1] // DOWNSCALE
            weight = _tile_weights(rows, cols, i, j, (th, tw), latent.device).to(piece.dtype)
            if out is None:
                out = piece.new_zeros((latent.shape[0], piece.shape[1], h * DOWNSCALE, w * DOWNSCALE))
                total = piece.new_zeros((h * DOWNSCALE, w * DOWNSCALE))
            region = (slice(r * DOWNSCALE, (r + th) * DOWNSCALE), slice(c * DOWNSCALE, (c + tw) * DOWNSCALE))
            out[(..., *region)] += piece * weight
            total[region] += weight
    return out / total  # where three tiles meet the ramps do not sum to one


class _Bottleneck(nn.Module):
    """ELIC residual bottleneck: x + (1x1 -> ReLU -> 3x3 -> ReLU -> 1x1)(x)."""

    def __init__(self, N: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(N, N // 2, 1),
            nn.ReLU(),
            nn.Conv2d(N // 2, N // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(N // 2, N, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


class _Unit(nn.Module):
    """CompressAI residual unit: ReLU(x + (1x1 -> ReLU -> 3x3 -> ReLU -> 1x1)(x))."""

    def __init__(self, N: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(N, N // 2, 1),
            nn.ReLU(),
            nn.Conv2d(N // 2, N // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(N // 2, N, 1),
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.conv(x))


class _Attention(nn.Module):
    """CompressAI simplified attention: x + a(x) * sigmoid(b(x))."""

    def __init__(self, N: int):
        super().__init__()
        self.conv_a = nn.Sequential(_Unit(N), _Unit(N), _Unit(N))
        self.conv_b = nn.Sequential(_Unit(N), _Unit(N), _Unit(N), nn.Conv2d(N, N, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_a(x) * torch.sigmoid(self.conv_b(x))


def _down(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 5, stride=2, padding=2)


class ElicAnalysis(nn.Module):
    """ELIC g_a (He et al. 2022), release name ``aux_codec``: RGB in [0, 1] -> (B, M, H/16, W/16)."""

    def __init__(self, N: int, M: int):
        super().__init__()
        self.analysis_transform = nn.Sequential(
            _down(3, N),
            _Bottleneck(N),
            _Bottleneck(N),
            _Bottleneck(N),
            _down(N, N),
            _Bottleneck(N),
            _Bottleneck(N),
            _Bottleneck(N),
            _Attention(N),
            _down(N, N),
            _Bottleneck(N),
            _Bottleneck(N),
            _Bottleneck(N),
            _down(N, M),
            _Attention(M),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.analysis_transform(x)
