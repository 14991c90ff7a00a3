"""DiTIC: the whole codec as one ``nn.Module`` with the release's top-level names
(``vae``, ``DiT``, ``codec``, ``prompter``, ``aux_codec``, ``timesteps``), and ``LatentCodec``, its
``codec``: y/z analysis, entropy coding in context order, and the heads (transforms in latent.py).

Encoder: x -> DC-AE latent y0 (1/32) and ELIC features (1/16) -> latent codec -> z, y strings.
Decoder: strings -> y_hat -> heads (mean, log-variance, res, prompt) -> prompter -> DiT velocity at
t = 999 -> x_hat_0 = mean - sigma_t g(s) v + res (flow.py) -> DC-AE decode (tiled when large).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec import flow
from codec.autoencoder import build_vae, decode_latent
from codec.config import DECODERS, CodecConfig
from codec.dit import build_dit, build_prompter
from codec.elic import ElicAnalysis
from codec.errors import CheckpointError
from codec.fastconv import use_float64_convs
from codec.latent import (
    CONTEXT_MODULES,
    AnalysisTransform,
    EntropyPath,
    HyperAnalysis,
    context_from_config,
    heads_from_config,
    pad_to_multiple,
)

if TYPE_CHECKING:
    from codec.entropy.coding import StepPositions

__all__ = ["DiTIC", "LatentCodec", "ForwardOutput", "distillation_loss", "LATENT_STRIDE", "PAD_MULTIPLE"]

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


def _ste_round(x: Tensor) -> Tensor:
    return (torch.round(x) - x).detach() + x


def latent_blocks(latents: Tensor) -> Tensor:
    """The 2x2 blocks of a (B, C, h, w) latent, h and w even, as rows of 4C values (channel-major, as
    ``pixel_unshuffle``): what one position of y at 1/64 stands for.  # (B·h/2·w/2, 4C)"""
    return F.pixel_unshuffle(latents.float(), 2).permute(0, 2, 3, 1).reshape(-1, 4 * latents.shape[1])


def latent_pca(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """(mean (4C,), principal directions as rows (min(N, 4C), 4C), strongest first) of ``latent_blocks``
    rows: the rank-k linear code of a block b is basis[:k] @ (b - mean)."""
    mean = blocks.mean(0)
    return mean, torch.linalg.svd(blocks - mean, full_matrices=False)[2]


class LatentCodec(nn.Module):
    """The release's ``codec`` module: y = g_a(latent, aux); z = h_a(y); four-step context; heads.

    Variable rate (``num_qualities > 1``): y is multiplied by a learned per-channel ``gain[q]`` before
    quantization and y_hat by ``inverse_gain[q]`` after (gained VAE); quality q in 1..Q, higher = finer.
    """

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        from codec.entropy import EntropyBottleneck, GaussianConditional

        lat = cfg.latent
        self.M, self.num_qualities = lat.M, lat.num_qualities
        self.cfg_linear_path = lat.linear_path
        self.coding_seconds = 0.0
        self.g_a = AnalysisTransform(cfg.vae.latent_channels, cfg.aux.M, lat.fuse_latent, lat.fuse_aux, lat.M)
        for name, module in heads_from_config(cfg).items():
            setattr(self, name, module)
        self.h_a = HyperAnalysis(lat.M)
        for name, module in context_from_config(cfg).items():
            setattr(self, name, module)
        log_min, log_max = math.log(lat.scale_min), math.log(lat.scale_max)
        with torch.device("cpu"):  # small; and their constructors check values (not possible on "meta")
            self.entropy_bottleneck = EntropyBottleneck(lat.N)
            table = torch.exp(torch.linspace(log_min, log_max, lat.scale_levels))
            self.gaussian_conditional = GaussianConditional(table, scale_bound=lat.scale_min)
        if lat.linear_path:
            blocks = 4 * cfg.vae.latent_channels
            self.g_a_linear = nn.Conv2d(blocks, lat.M, 1)
            self.g_s_linear = nn.Conv2d(lat.M, blocks, 1)
        if lat.num_qualities > 1:
            # geometric initial gains: quality Q keeps y's scale, each step down halves the precision
            steps = torch.arange(lat.num_qualities, dtype=torch.float32) - (lat.num_qualities - 1)
            init = torch.exp2(steps)[:, None].repeat(1, lat.M)
            self.gain = nn.Parameter(init.clone())
            self.inverse_gain = nn.Parameter(1.0 / init)

    # --- helpers -------------------------------------------------------------------------------
    def _gains(self, quality: int | Tensor, batch: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        if self.num_qualities == 1:
            return None
        q = torch.as_tensor(quality, device=device).long().reshape(-1).expand(batch)
        if bool(((q < 1) | (q > self.num_qualities)).any()):
            raise ValueError(f"quality must be in 1..{self.num_qualities}, got {q.tolist()}")
        return self.gain[q - 1][:, :, None, None], self.inverse_gain[q - 1][:, :, None, None]

    def _timed(self, fn, *args):  # noqa: ANN001, ANN202 - time spent in the entropy coder
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.coding_seconds += time.perf_counter() - start

    def _path(self) -> EntropyPath:
        return EntropyPath({name: getattr(self, name) for name in CONTEXT_MODULES})

    def entropy_path64(self) -> EntropyPath:
        """A copy of the entropy-parameter path that computes in float64, rebuilt whenever the weights
        change (unless ``freeze_entropy_path`` pinned it).

        The copy keeps the originals' dtype (float32) and its convolutions cast their weights to float64
        at each call (``fastconv.Float64Conv2d``): the same float64 values and arithmetic as a float64
        copy, so the same scales and payloads, in half its memory (ditic-official: 0.40 GiB, not 0.79)."""
        if self.__dict__.get("_path64_frozen"):
            return self.__dict__["_path64"][1]
        params = [t for name in CONTEXT_MODULES for t in getattr(self, name).parameters()]
        key = tuple((t.data_ptr(), t._version, t.device) for t in params)
        cached = self.__dict__.get("_path64")
        if cached is None or cached[0] != key:
            copies = {name: copy.deepcopy(getattr(self, name)) for name in CONTEXT_MODULES}
            path = use_float64_convs(EntropyPath(copies).eval().requires_grad_(False))
            for t in path.parameters():
                t.grad = None  # a training step's gradients are no part of the copy
            path.use_cuda_graphs()  # replayed only where its inputs are on a GPU
            self.__dict__["_path64"] = cached = (key, path)
        return cached[1]

    def freeze_entropy_path(self) -> None:
        """Build the float64 path now and keep it whatever happens to the weights (inference): the
        originals of ``CONTEXT_MODULES`` may then leave the device, as ``Codec`` does."""
        self.entropy_path64()
        self.__dict__["_path64_frozen"] = True

    @torch.no_grad()
    def init_linear_path(self, latents: Tensor) -> None:
        """Set the linear path to the rank-M PCA code of ``latents``' 2x2 blocks (B, C, h, w), h and w
        even: g_a_linear projects a block on the top M components, g_s_linear maps them back."""
        blocks = latent_blocks(latents)
        if blocks.shape[0] < self.M:
            raise ValueError(f"need at least {self.M} latent blocks for the PCA, got {blocks.shape[0]}")
        mean, basis = latent_pca(blocks)
        basis = basis[: self.M]  # (M, 4C)
        self.g_a_linear.weight.copy_(basis[:, :, None, None])
        self.g_a_linear.bias.copy_(-basis @ mean)
        self.g_s_linear.weight.copy_(basis.T[:, :, None, None])
        self.g_s_linear.bias.copy_(mean)

    def analysis(self, latent: Tensor, aux: Tensor, quality: int | Tensor) -> tuple[Tensor, Tensor]:
        """(y, z): y at 1/64 (gained), z at 1/256 from y replicate-padded to a multiple of 4."""
        y = self.g_a(latent, aux)
        if self.cfg_linear_path:
            y = y + self.g_a_linear(F.pixel_unshuffle(latent, 2)).to(y.dtype)
        gains = self._gains(quality, y.shape[0], y.device)
        if gains is not None:
            y = y * gains[0].to(y.dtype)
        return y, self.h_a(pad_to_multiple(y, 4))

    def heads(self, y_hat: Tensor, y_scales: Tensor, quality: int | Tensor) -> dict[str, Tensor]:
        gains = self._gains(quality, y_hat.shape[0], y_hat.device)
        return self.heads_with(y_hat, y_scales, None if gains is None else gains[1].to(y_hat.dtype))

    def inverse_gain_for(self, quality: int, batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(B, M, 1, 1) ``inverse_gain[q]`` for ``heads_with``; ones for a single-rate model (exact)."""
        gains = self._gains(quality, batch, device)
        if gains is None:
            return torch.ones(batch, self.M, 1, 1, device=device, dtype=dtype)
        return gains[1].to(device, dtype)

    def heads_with(self, y_hat: Tensor, y_scales: Tensor, inverse: Tensor | None) -> dict[str, Tensor]:
        """The heads from y_hat and its scales, un-gained by ``inverse`` (None: not gained). No host
        synchronisation, so the decoder can replay it, with the DiT step, from one CUDA graph."""
        if inverse is not None:
            y_hat, y_scales = y_hat * inverse, y_scales * inverse
        mean = self.g_s(y_hat)
        if self.cfg_linear_path:
            mean = mean + F.pixel_shuffle(self.g_s_linear(y_hat), 2).to(mean.dtype)
        return {
            "mean": mean,
            "scale": self.scale(y_scales),
            "res": self.aux(y_hat),
            "prompt": self.prompt(y_hat),
        }

    # --- training ------------------------------------------------------------------------------
    def forward(self, latent: Tensor, aux: Tensor, quality: int | Tensor) -> dict[str, Tensor]:
        y, z = self.analysis(latent, aux, quality)
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck.quantiles[:, 0, 1].detach().view(1, -1, 1, 1)
        z_hat = _ste_round(z - medians) + medians
        likelihoods = []

        def quantize(k: int, means: Tensor, scales: Tensor, mask: Tensor) -> Tensor:
            _, lik = self.gaussian_conditional(y, scales, means)  # noisy y in training, rounded in eval
            likelihoods.append(lik * mask)
            return (_ste_round(y - means) + means) * mask

        y_hat, y_scales = self._path().run(z_hat, y.shape[-2:], quantize)
        out = self.heads(y_hat, y_scales, quality)
        out["likelihoods"] = {"y": sum(likelihoods), "z": z_likelihoods}
        return out

    # --- coding --------------------------------------------------------------------------------
    levels_on_device: bool | None = None  # None: where the tensors are off the CPU (tests set True)

    def _levels_on_device(self, device: torch.device) -> bool:
        """Whether decoding computes each step's table levels and y_hat beside the scales (a GPU's
        work, ``StepPositions.levels``/``place``) rather than in numpy (``decode_batch``). Both decode
        the same symbols; the GPU path copies less and leaves the host only the range coder's work."""
        return device.type != "cpu" if self.levels_on_device is None else self.levels_on_device

    def _positions(self, k: int, mask: Tensor) -> StepPositions:
        from codec.entropy.coding import StepPositions

        cache = self.__dict__.setdefault("_step_positions", {})
        key = (k, tuple(mask.shape))
        if key not in cache:
            if len(cache) >= 32:  # a few image sizes at a time; masks are cheap to recompute
                cache.clear()
            cache[key] = StepPositions(mask)
        return cache[key]

    @torch.no_grad()
    def compress(self, latent: Tensor, aux: Tensor, quality: int) -> tuple[list[list[bytes]], Tensor]:
        """Per image [z string, y string], and y_hat (float64) exactly as the decoder will rebuild it.

        ``coding_seconds`` afterwards holds the time spent in the entropy coder."""
        from codec.entropy import GaussianStreamEncoder

        self.coding_seconds = 0.0
        y, z = self.analysis(latent, aux, quality)
        z_cpu = z.float().cpu()  # numpy has no bfloat16; the copy waits for the GPU, outside the coder's time
        z_strings = self._timed(self.entropy_bottleneck.compress, z_cpu)
        z_hat = self._timed(self.entropy_bottleneck.decompress, z_strings, z.shape[-2:])
        y64 = y.to(torch.float64)
        coders = [self.gaussian_conditional.stream_encoder() for _ in range(y.shape[0])]

        def encode(k: int, means: Tensor, scales: Tensor, mask: Tensor) -> Tensor:
            positions = self._positions(k, mask)
            y_k, scales_k, means_k = positions.gather(y64, scales, means)  # one transfer per step
            y_hat_k = self._timed(GaussianStreamEncoder.encode_batch, coders, y_k, scales_k, means_k)
            return positions.scatter(y_hat_k, means)

        z_hat = z_hat.to(y.device, torch.float64)
        y_hat, _ = self.entropy_path64().run(z_hat, y.shape[-2:], encode)
        strings = [[zs, self._timed(c.finish)] for zs, c in zip(z_strings, coders, strict=True)]
        return strings, y_hat

    @torch.no_grad()
    def decompress(
        self,
        strings: list[list[bytes]],
        y_size: tuple[int, int],
        quality: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> dict[str, Tensor]:
        """The heads (mean, scale, res, prompt) and y_hat (float64) from per-image [z, y] strings."""
        y_hat, y_scales = self.decompress_latent(strings, y_size, device)
        out = self.heads(y_hat.to(dtype), y_scales.to(dtype), quality)
        out["y_hat"] = y_hat
        return out

    @torch.no_grad()
    def decompress_latent(
        self, strings: list[list[bytes]], y_size: tuple[int, int], device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Entropy decoding alone: (y_hat, the scale of each element of y), float64, still gained.

        ``coding_seconds`` afterwards holds the time spent in the entropy coder."""
        from codec.entropy import GaussianStreamDecoder

        self.coding_seconds = 0.0
        h, w = y_size
        z_size = (-(-h // 4), -(-w // 4))
        z_hat = self._timed(self.entropy_bottleneck.decompress, [s[0] for s in strings], z_size)
        coders = [self.gaussian_conditional.stream_decoder(s[1]) for s in strings]
        on_device = self._levels_on_device(torch.device(device)) and bool(coders)
        boundaries = torch.from_numpy(coders[0].boundaries).to(device) if on_device else None

        def decode(k: int, means: Tensor, scales: Tensor, mask: Tensor) -> Tensor:
            positions = self._positions(k, mask)
            if not on_device:
                scales_k, means_k = positions.gather(scales, means)  # one transfer per step
                y_hat_k = self._timed(GaussianStreamDecoder.decode_batch, coders, scales_k, means_k)
                return positions.scatter(y_hat_k, means)
            levels, means_k = positions.levels(scales, means, boundaries)  # one int32 transfer per step
            q = positions.host_values(len(coders), means.device)
            self._timed(GaussianStreamDecoder.decode_levels, coders, levels, q.numpy())
            return positions.place(q, means_k, means)

        y_hat, y_scales = self.entropy_path64().run(z_hat.to(device, torch.float64), (h, w), decode)
        for coder in coders:
            self._timed(coder.finish)
        return y_hat, y_scales


class DiTIC(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.vae = build_vae(cfg)
        if cfg.vae.fidelity_decoder:  # the same shapes; which one decodes is chosen by use_decoder
            self.fidelity_decoder = copy.deepcopy(self.vae.decoder)
        self.decoder_in_use = "perceptual"
        self.DiT = build_dit(cfg)
        self.codec = LatentCodec(cfg)
        self.prompter = build_prompter(cfg)
        self.aux_codec = ElicAnalysis(cfg.aux.N, cfg.aux.M)
        self.register_buffer("timesteps", torch.tensor([cfg.flow.timestep], dtype=torch.long))

    @property
    def qualities(self) -> list[int]:
        return self.cfg.qualities

    distillation_loss = staticmethod(distillation_loss)

    def use_decoder(self, kind: str) -> None:
        """Decode with the ``perceptual`` DC-AE decoder (the trained default) or the ``fidelity`` one (a
        config with ``vae.fidelity_decoder``). The latent, hence every payload, is the same for both;
        the two modules trade places, so every decode path (tiles, graphs, compile) follows. Choose before
        a ``Codec`` is built on the model (``load_codec(…, decoder=)``): graphs captured earlier keep the
        decoder they captured."""
        if kind not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {kind!r}")
        if kind != "perceptual" and not self.cfg.vae.fidelity_decoder:
            raise CheckpointError(f"this model ({self.cfg.name}) has no {kind} decoder")
        if kind != self.decoder_in_use:
            self.vae.decoder, self.fidelity_decoder = self.fidelity_decoder, self.vae.decoder
            self.decoder_in_use = kind

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

    def decode_pixels(self, latent_hat: Tensor, tiled: bool | None = None, **options) -> Tensor:  # noqa: ANN003
        """x_hat in [-1, 1] from the flow's scaled latent; ``options``: ``decode_latent``'s (memory budget,
        a stand-in decoder)."""
        latent = latent_hat / self.cfg.vae.scaling_factor
        return decode_latent(self.vae, latent, tiled, **options).clamp(-1, 1)

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
        y_hat, y_scales = self.decompress_latent(strings, latent_shape, quality)
        dtype = self._decode_param().dtype
        out = self.codec.heads(y_hat.to(dtype), y_scales.to(dtype), quality)
        out["y_hat"] = y_hat
        return out

    @torch.no_grad()
    def decompress_latent(
        self, strings: list[list[bytes]], latent_shape: tuple[int, int], quality: int = 1
    ) -> tuple[Tensor, Tensor]:
        """Entropy decoding only: (y_hat, y's scales), float64, gained, on the decoder's device.
        ``latent_from_y`` takes them on."""
        self._check_quality(quality)
        if not strings or any(len(s) != 2 for s in strings):
            raise ValueError("strings must be a non-empty list of [z string, y string] per image")
        h, w = (int(v) for v in latent_shape)
        if h < 1 or w < 1:
            raise ValueError(f"latent_shape must be positive, got {tuple(latent_shape)}")
        self.update()
        return self.codec.decompress_latent(strings, (h, w), self._decode_param().device)

    def latent_from_y(self, y_hat: Tensor, y_scales: Tensor, inverse: Tensor) -> Tensor:
        """Heads -> prompter -> DiT step: x_hat_0 from y_hat and its scales in the model's dtype, and
        ``inverse`` = ``codec.inverse_gain_for(q, ...)``. No host synchronisation: ``Codec`` replays it
        from one CUDA graph."""
        return self.synthesize(self.codec.heads_with(y_hat, y_scales, inverse))[0]

    def _decode_param(self) -> Tensor:
        return next(self.vae.decoder.parameters())  # on the device whatever a decode-only load left off

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
