"""Training objectives of DiT-IC (DESIGN §1 "training"; paper §3.4).

One variable-rate model is trained for all qualities: each sample carries a quality q ∈ 1..Q and
pays the rate with its own λ_q (RD Lagrangian, Ballé et al.):

    L = 1.0·MSE(x, x̂) + 1.0·LPIPS(x, x̂) + λ_q·R(ŷ, ẑ) + 0.05·L_distil  [+ 0.5·w_adapt·L_G]

MSE is taken on the model's own [-1, 1] scale (4 × the MSE of [0, 1] images), as the release does.
R is in bits per pixel. The release's DISTS term (0.2·DISTS) is left out: DISTS has no offline
weights. λ choice: at the optimum λ_q equals the slope -dD/dR of the codec's RD curve. On photos a
codec of this kind loses about 1.5 LPIPS(VGG)+MSE units per bpp near 0.03 bpp and about 0.5 near
0.3 bpp (the release's Kodak points: LPIPS .155 → .083 and MSE .024 → .012 between 0.029 and 0.102
bpp, slope ≈ 1.1), so λ runs geometrically from 4 (q = 1, lowest rate) to 0.25 (q = Q).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "rate_lambdas",
    "bits_per_pixel",
    "distillation_hinge",
    "distillation_loss",
    "latent_cosine",
    "latent_mse_loss",
    "psnr",
    "LossTerms",
    "RateDistortionLoss",
    "PatchDiscriminator",
    "hinge_d_loss",
    "hinge_g_loss",
    "adaptive_gan_weight",
]

LAMBDA_MAX = 4.0
LAMBDA_MIN = 0.25


def rate_lambdas(
    num_qualities: int, lambda_max: float = LAMBDA_MAX, lambda_min: float = LAMBDA_MIN
) -> list[float]:
    """λ_q for q = 1..Q, geometric from ``lambda_max`` (lowest rate) down to ``lambda_min``."""
    if num_qualities < 1:
        raise ValueError(f"num_qualities must be >= 1, got {num_qualities}")
    if not 0 < lambda_min <= lambda_max:
        raise ValueError(f"need 0 < lambda_min <= lambda_max, got {lambda_min}, {lambda_max}")
    if num_qualities == 1:
        return [float(lambda_max)]
    ratio = (lambda_min / lambda_max) ** (1.0 / (num_qualities - 1))
    return [float(lambda_max * ratio**i) for i in range(num_qualities)]


def bits_per_pixel(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """R per sample: Σ −log₂ p over every latent (ŷ, ẑ, ...) divided by the image's H·W.  # (B,)"""
    if not likelihoods:
        raise ValueError("likelihoods is empty: the model returned no latents to pay for")
    total = None
    for p in likelihoods.values():
        bits = -torch.log2(p.float()).flatten(1).sum(dim=1)
        total = bits if total is None else total + bits
    return total / float(num_pixels)


def latent_cosine(x0_hat: Tensor, y0: Tensor) -> Tensor:
    """cos(x̂₀, y₀) over channels per position, (B, h, w); y₀ (the clean latent) a constant target."""
    if x0_hat.shape != y0.shape:
        raise ValueError(f"x0_hat {tuple(x0_hat.shape)} and y0 {tuple(y0.shape)} differ in shape")
    return F.cosine_similarity(x0_hat.float(), y0.detach().float(), dim=1)


def distillation_hinge(cos: Tensor, margin: float = 0.5) -> Tensor:
    """mean ReLU(1 − margin − cos): the self-distillation term from ``latent_cosine``'s output."""
    return F.relu(1.0 - margin - cos).mean()


def distillation_loss(x0_hat: Tensor, y0: Tensor, margin: float = 0.5) -> Tensor:
    """Self-distillation alignment (2): mean ReLU(1 − margin − cos(x̂₀, y₀)), cosine over channels.

    y₀ is the clean DC-AE latent of the input and is treated as a constant target.
    """
    return distillation_hinge(latent_cosine(x0_hat, y0), margin)


def latent_mse_loss(x0_hat: Tensor, y0: Tensor) -> Tensor:
    """MSE of x̂₀ to the clean latent y₀ relative to y₀'s mean square (scale-free; y₀ a constant).

    Not in the release's objective: an option (``ditic train --latent-weight``) that supervises the
    decoded latent's magnitude as well as its direction, which the cosine distillation leaves free."""
    if x0_hat.shape != y0.shape:
        raise ValueError(f"x0_hat {tuple(x0_hat.shape)} and y0 {tuple(y0.shape)} differ in shape")
    target = y0.detach().float()
    return (x0_hat.float() - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)


def psnr(x: Tensor, x_hat: Tensor) -> Tensor:
    """PSNR in dB per sample of images in [-1, 1] (peak 2, i.e. the PSNR of the [0, 1] images).  # (B,)"""
    mse = (x.float() - x_hat.float().clamp(-1, 1)).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-10))


@dataclass
class LossTerms:
    """The total loss to back-propagate and its parts for logging (per-sample bpp and PSNR)."""

    loss: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)  # detached scalars: no host sync here
    bpp: Tensor | None = None  # (B,), detached
    psnr: Tensor | None = None  # (B,), detached


class RateDistortionLoss(nn.Module):
    """D + λ_q·R + w_d·L_distil for one batch, λ looked up per sample from its quality.

    ``perceptual`` is any module mapping two (B, 3, H, W) images in [-1, 1] to a distance per sample
    (``codec.perceptual.STLPIPS``); its parameters are frozen here. ``lambdas[q - 1]`` is λ_q.
    """

    def __init__(
        self,
        lambdas: list[float],
        perceptual: nn.Module | None = None,
        mse_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        distill_weight: float = 0.05,
        latent_weight: float = 0.0,
        distill_margin: float = 0.5,
    ) -> None:
        super().__init__()
        if not lambdas:
            raise ValueError("lambdas is empty: give one λ per quality")
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float32), persistent=False)
        self.perceptual = perceptual
        if perceptual is not None:
            perceptual.requires_grad_(False).eval()
        self.mse_weight = mse_weight
        self.perceptual_weight = perceptual_weight
        self.distill_weight = distill_weight
        # the hinge acts where cos(x̂₀, y₀) < 1 − margin: 0.5 in the release; a from-scratch codec with the
        # latent loss keeps the cosine above that, so only a smaller margin lets the term act
        if not 0.0 <= distill_margin < 2.0:
            raise ValueError(f"distill_margin must be in [0, 2), got {distill_margin}")
        self.distill_margin = distill_margin
        self.latent_weight = latent_weight  # 0: the release's objective; > 0 adds latent_mse_loss
        self.rate_scale = 1.0  # multiplies every λ_q: a training schedule may ramp the rate term in

    def distortion(self, x: Tensor, x_hat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-sample D = w_mse·MSE + w_p·LPIPS on [-1, 1] images, and its logged parts.  # (B,)"""
        mse = (x.float() - x_hat.float()).pow(2).flatten(1).mean(dim=1)
        d = self.mse_weight * mse
        parts = {"mse": mse.detach().mean()}
        if self.perceptual is not None and self.perceptual_weight > 0:
            p = self.perceptual(x_hat.float(), x.float()).reshape(x.shape[0], -1).mean(dim=1)
            d = d + self.perceptual_weight * p
            parts["perceptual"] = p.detach().mean()
        return d, parts

    def lambda_of(self, quality: Tensor | int, batch: int, device: torch.device) -> Tensor:
        """λ per sample for an int or (B,) tensor of qualities in 1..Q.  # (B,)

        Qualities on the host are range-checked; those already on an accelerator are not (reading
        them back would stall it), the model checks its own."""
        q = torch.as_tensor(quality, dtype=torch.long)
        n = self.lambdas.numel()
        if q.device.type == "cpu" and (int(q.min()) < 1 or int(q.max()) > n):
            raise ValueError(f"quality must be in 1..{n}, got {q.tolist()}")
        return self.lambdas.to(device)[q.to(device) - 1].expand(batch)

    def forward(self, x: Tensor, out: dict, quality: Tensor | int | None) -> LossTerms:
        """Loss of one model output ``out`` (``x_hat``, ``likelihoods``, optionally ``latent_hat`` and
        ``latent_clean``). ``quality=None`` trains the autoencoder alone: no rate, no distillation."""
        x_hat = out["x_hat"]
        d, parts = self.distortion(x, x_hat)
        total = d
        bpp = None
        if quality is not None:
            batch, _, h, w = x.shape
            bpp = bits_per_pixel(out["likelihoods"], h * w)
            total = total + self.rate_scale * self.lambda_of(quality, batch, x.device) * bpp
            parts["bpp"] = bpp.detach().mean()
        loss = total.mean()
        if quality is not None and self.distill_weight > 0 and out.get("latent_hat") is not None:
            cos = latent_cosine(out["latent_hat"], out["latent_clean"])
            distil = distillation_hinge(cos, self.distill_margin)
            loss = loss + self.distill_weight * distil
            parts["distill"] = distil.detach()
            parts["latent_cos"] = cos.detach().mean()  # what the hinge compares with 1 − margin
        if quality is not None and self.latent_weight > 0 and out.get("latent_hat") is not None:
            latent = latent_mse_loss(out["latent_hat"], out["latent_clean"])
            loss = loss + self.latent_weight * latent
            parts["latent_mse"] = latent.detach()
        p = psnr(x, x_hat.detach())
        parts["psnr"] = p.mean()
        return LossTerms(loss=loss, parts=parts, bpp=None if bpp is None else bpp.detach(), psnr=p)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): strided 4×4 convs → one logit per ~70×70 patch.

    GroupNorm instead of BatchNorm, so its statistics do not depend on the per-GPU batch under DDP.
    """

    def __init__(self, in_channels: int = 3, width: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = width
        for i in range(1, num_layers + 1):
            out_ch = width * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [
                nn.Conv2d(ch, out_ch, 4, stride, 1, bias=False),
                nn.GroupNorm(min(32, out_ch // 4), out_ch),
                nn.LeakyReLU(0.2, True),
            ]
            ch = out_ch
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, 1, h, w) logits


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss: ½·(E[ReLU(1 − D(x))] + E[ReLU(1 + D(x̂))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator side of the hinge GAN: −E[D(x̂)]."""
    return -logits_fake.mean()


def adaptive_gan_weight(rd_loss: Tensor, g_loss: Tensor, last_layer: Tensor, scale: float = 0.5) -> Tensor:
    """scale·‖∇L_RD‖ / ‖∇L_G‖ at the decoder's last layer (Esser et al. 2021, as the release does),
    so the adversarial gradient stays a fixed fraction of the reconstruction gradient. ``last_layer``
    may be any tensor both losses depend on through the graph (a frozen decoder's input latent)."""
    g_rd = torch.autograd.grad(rd_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = g_rd.norm() / (g_adv.norm() + 1e-4)
    return (scale * weight.clamp(0.0, 1e4)).detach()
