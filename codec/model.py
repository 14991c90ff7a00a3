"""DiTIC: the whole codec as one ``nn.Module`` with the release's top-level names
(``vae``, ``DiT``, ``codec``, ``prompter``, ``aux_codec``, ``timesteps``).

Encoder: x -> DC-AE latent y0 (1/32) and ELIC features (1/16) -> latent codec -> z, y strings.
Decoder: strings -> y_hat -> heads (mean, log-variance, res, prompt) -> prompter -> DiT velocity at
t = 999 -> x_hat_0 = mean - sigma_t g(s) v + res (flow.py) -> DC-AE decode (tiled when large).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec import flow
from codec.autoencoder import ElicAnalysis, build_vae, decode_latent
from codec.config import CodecConfig
from codec.dit import build_dit, build_prompter
from codec.latent import LatentCodec

__all__ = ["DiTIC", "ForwardOutput", "distillation_loss", "LATENT_STRIDE", "PAD_MULTIPLE"]

LATENT_STRIDE = 32  # DC-AE latent
PAD_MULTIPLE = 64  # y grid; z (1/256) pads its own grid to a multiple of 4


@dataclass
class ForwardOutput:
    """Training-time outputs. Also readable as a mapping (``out["x_hat"]``, ``out.get(...)``)."""

    x_hat: Tensor  # (B, 3, H, W) in [-1, 1]
    likelihoods: dict[str, Tensor]  # {"y": (B, M, H/64, W/64), "z": (B, M/2, H/256, W/256)}
    latent_hat: Tensor  # one-step output x_hat_0, (B, C, H/32, W/32), scaled latent space
    latent_clean: Tensor  # clean DC-AE latent y0 of the input (scaled), detached
    latent_mean: Tensor  # decoded mean (the DiT input)
    latent_log_var: Tensor  # decoded log-variance (the ``scale`` head)
    velocity: Tensor  # the DiT output v

    def __getitem__(self, key: str) -> object:
        return getattr(self, key)

    def get(self, key: str, default: object = None) -> object:
        return getattr(self, key, default)

    def keys(self) -> list[str]:
        return list(self.__dataclass_fields__)


def distillation_loss(
    latent_hat: Tensor, latent_clean: Tensor, weight: float = 0.05, margin: float = 0.5
) -> Tensor:
    """Self-distillation alignment (paper Sec. 3.2): weight * mean ReLU(1 - margin - cos(x_hat_0, y0)),
    cosine over channels at each position."""
    return weight * F.relu(1 - margin - F.cosine_similarity(latent_hat, latent_clean, dim=1)).mean()


class DiTIC(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.vae = build_vae(cfg)
        self.DiT = build_dit(cfg)
        self.codec = LatentCodec(cfg)
        self.prompter = build_prompter(cfg)
        self.aux_codec = ElicAnalysis(cfg.aux.N, cfg.aux.M)
        self.register_buffer("timesteps", torch.tensor([cfg.flow.timestep], dtype=torch.long))

    @property
    def qualities(self) -> list[int]:
        return self.cfg.qualities

    distillation_loss = staticmethod(distillation_loss)

    # --- shared pieces -------------------------------------------------------------------------
    def encode_latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(scaled DC-AE latent y0 at 1/32, ELIC features at 1/16) of x in [-1, 1]."""
        _check_input(x)
        aux = self.aux_codec((x + 1) / 2).detach()
        latent = self.vae.encoder(x) * self.cfg.vae.scaling_factor
        return latent, aux

    def synthesize(self, heads: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(x_hat_0, velocity) from the heads: prompter -> DiT at t -> variance-guided step."""
        mean = heads["mean"]
        condition = self.prompter(heads["prompt"])
        t = self.timesteps.to(mean.device).expand(mean.shape[0]) * self.DiT.config.timestep_scale
        velocity = self.DiT(mean, encoder_hidden_states=condition, timestep=t, return_dict=False)[0]
        return flow.one_step(mean, heads["scale"], velocity, heads["res"], self.cfg.flow), velocity

    def decode_pixels(self, latent_hat: Tensor, tiled: bool | None = None) -> Tensor:
        return decode_latent(self.vae, latent_hat / self.cfg.vae.scaling_factor, tiled).clamp(-1, 1)

    # --- training ------------------------------------------------------------------------------
    def forward(self, x: Tensor, quality: int | Tensor = 1) -> ForwardOutput:
        """x (B, 3, H, W) in [-1, 1], H and W multiples of 64 (256 keeps z unpadded); quality int or (B,)."""
        latent, aux = self.encode_latent(x)
        heads = self.codec(latent, aux, quality)
        latent_hat, velocity = self.synthesize(heads)
        x_hat = self.vae.decoder(latent_hat / self.cfg.vae.scaling_factor).clamp(-1, 1)
        return ForwardOutput(
            x_hat=x_hat,
            likelihoods=heads["likelihoods"],
            latent_hat=latent_hat,
            latent_clean=latent.detach(),
            latent_mean=heads["mean"],
            latent_log_var=heads["scale"],
            velocity=velocity,
        )

    # --- coding --------------------------------------------------------------------------------
    def aux_loss(self) -> Tensor:
        """The factorized prior's quantile loss (train ``codec.entropy_bottleneck.quantiles`` with it)."""
        return self.codec.entropy_bottleneck.aux_loss()

    def update(self, force: bool = False) -> bool:
        """Build the entropy models' integer CDF tables if missing; after training, ``force=True``."""
        a = self.codec.entropy_bottleneck.update(force=force)
        b = self.codec.gaussian_conditional.update(force=force)
        return a or b

    @torch.no_grad()
    def compress(self, x: Tensor, quality: int = 1) -> list[list[bytes]]:
        """Per image [z string, y string]. x (B, 3, H, W) in [-1, 1], H and W multiples of 64."""
        self._check_quality(quality)
        self.update()
        latent, aux = self.encode_latent(x)
        return self.codec.compress(latent, aux, quality)[0]

    @torch.no_grad()
    def decompress(
        self,
        strings: list[list[bytes]],
        latent_shape: tuple[int, int],
        quality: int = 1,
        tiled: bool | None = None,
    ) -> Tensor:
        """x_hat (B, 3, 64h, 64w) in [-1, 1] from per-image strings; ``latent_shape`` = y grid (h, w)."""
        heads = self.decompress_heads(strings, latent_shape, quality)
        latent_hat, _ = self.synthesize(heads)
        return self.decode_pixels(latent_hat, tiled)

    @torch.no_grad()
    def decompress_heads(
        self, strings: list[list[bytes]], latent_shape: tuple[int, int], quality: int = 1
    ) -> dict[str, Tensor]:
        """Entropy decoding + heads only (mean, scale, res, prompt and the float64 y_hat)."""
        self._check_quality(quality)
        if not strings or any(len(s) != 2 for s in strings):
            raise ValueError("strings must be a non-empty list of [z string, y string] per image")
        h, w = (int(v) for v in latent_shape)
        if h < 1 or w < 1:
            raise ValueError(f"latent_shape must be positive, got {tuple(latent_shape)}")
        self.update()
        param = next(self.parameters())
        return self.codec.decompress(strings, (h, w), quality, param.device, param.dtype)

    def _check_quality(self, quality: int) -> None:
        if isinstance(quality, bool) or not isinstance(quality, int) or quality not in self.qualities:
            raise ValueError(f"quality must be one of {self.qualities}, got {quality!r}")


def _check_input(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[-2] % PAD_MULTIPLE or x.shape[-1] % PAD_MULTIPLE:
        raise ValueError(
            f"image height and width must be multiples of {PAD_MULTIPLE} (pad first), "
            f"got {tuple(x.shape[-2:])}"
        )
