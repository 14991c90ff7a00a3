"""The auxiliary analysis transform of DiT-IC: ELIC's ``g_a`` (He et al. 2022), release name
``aux_codec``, whose 1/16 features the latent codec fuses with the DC-AE latent."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ElicAnalysis"]


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
