"""The diffusion transformer (SANA, from diffusers) and the latent-conditioned prompter.

The prompter replaces SANA's text encoder (paper Sec. 3.3, "latent-conditioned guidance"): the 1/32
``prompt`` map (B, C, h, w) is flattened, adaptive-average-pooled to ``pooled_tokens`` tokens, joined by
learned tokens (``pattern``) to ``num_tokens``, and mapped by an MLP to the DiT's caption width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.config import CodecConfig

__all__ = ["Prompter", "build_dit"]


class Prompter(nn.Module):
    """Release name ``prompter``: ``pattern`` (1, learned tokens, C) and ``align`` (Linear-SiLU x3).

    ``mode``: ``latent`` (as released), ``learned`` (the pooled tokens are zeroed, so the condition is the
    learned tokens alone: ablation), ``zero`` (an all-zero condition: ablation).
    """

    def __init__(self, in_channels: int, embed_dim: int, num_tokens: int, pooled_tokens: int, mode: str):
        super().__init__()
        self.pooled_tokens, self.mode, self.embed_dim = pooled_tokens, mode, embed_dim
        self.pattern = nn.Parameter(torch.randn(1, num_tokens - pooled_tokens, in_channels))
        self.align = nn.Sequential(
            nn.Linear(in_channels, embed_dim),
            nn.SiLU(),
            nn.Linear(embed_dim, embed_dim),
            nn.SiLU(),
            nn.Linear(embed_dim, embed_dim),
        )
        for layer in self.align:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)

    def forward(self, prompt: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, num_tokens, embed_dim)."""
        B = prompt.shape[0]
        pooled = F.adaptive_avg_pool1d(prompt.flatten(2), self.pooled_tokens).transpose(1, 2)  # (B, 48, C)
        if self.mode != "latent":
            pooled = torch.zeros_like(pooled)
        tokens = torch.cat([pooled, self.pattern.to(pooled.dtype).expand(B, -1, -1)], dim=1)  # (B, 77, C)
        condition = self.align(tokens)
        return torch.zeros_like(condition) if self.mode == "zero" else condition


def build_prompter(cfg: CodecConfig) -> Prompter:
    p = cfg.prompter
    return Prompter(
        cfg.latent.prompt_channels, cfg.dit.caption_channels, p.num_tokens, p.pooled_tokens, p.mode
    )


def build_dit(cfg: CodecConfig) -> nn.Module:
    """``SanaTransformer2DModel.from_config`` (never from a hub); velocity prediction on the 1/32 latent."""
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel.from_config(cfg.dit.diffusers_config(cfg.vae.latent_channels))
