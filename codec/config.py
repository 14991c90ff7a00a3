"""Named DiT-IC configurations: frozen nested dataclasses and one registry.

``ditic-official`` is the released model exactly (its checkpoint keys and shapes equal the release's);
``ditic-small`` is the embedded default (same architecture, <= 12 M parameters); ``ditic-test`` is tiny,
for CPU tests. A checkpoint stores its config as JSON (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "VAEConfig",
    "DiTConfig",
    "FlowConfig",
    "LatentConfig",
    "PrompterConfig",
    "AuxConfig",
    "CodecConfig",
    "CONFIGS",
    "get_config",
]

PROMPT_MODES = ("latent", "learned", "zero")


# which DC-AE decoder decodes (DiTIC.use_decoder): stage C's, or a second one fitted for PSNR where the
# config has vae.fidelity_decoder
DECODERS = ("perceptual", "fidelity")


@dataclass(frozen=True)
class VAEConfig:
    """DC-AE (``diffusers.AutoencoderDC``): 1/32 downsampling, ``latent_channels`` at the bottleneck."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    block_types: tuple[str, ...] = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
    encoder_layers_per_block: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_layers_per_block: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    attention_head_dim: int = 32
    latent_channels: int = 32
    scaling_factor: float = 0.41407
    # the decoder's widths where they differ from the encoder's (None: the same as block_out_channels)
    decoder_block_out_channels: tuple[int, ...] | None = None
    # a second DC-AE decoder of the same shapes for the same latent, fitted for fidelity (MSE) rather than
    # perception: the same payloads decode either way, chosen at decode time (``load_codec``'s ``decoder``)
    fidelity_decoder: bool = False

    def diffusers_config(self) -> dict[str, Any]:
        return {
            "in_channels": 3,
            "latent_channels": self.latent_channels,
            "attention_head_dim": self.attention_head_dim,
            "encoder_block_types": list(self.block_types),
            "decoder_block_types": list(self.block_types),
            "encoder_block_out_channels": list(self.block_out_channels),
            "decoder_block_out_channels": list(self.decoder_block_out_channels or self.block_out_channels),
            "encoder_layers_per_block": list(self.encoder_layers_per_block),
            "decoder_layers_per_block": list(self.decoder_layers_per_block),
            "encoder_qkv_multiscales": [list(s) for s in self.qkv_multiscales],
            "decoder_qkv_multiscales": [list(s) for s in self.qkv_multiscales],
            "upsample_block_type": "interpolate",
            "downsample_block_type": "Conv",
            "decoder_norm_types": "rms_norm",
            "decoder_act_fns": "silu",
            "scaling_factor": self.scaling_factor,
        }


@dataclass(frozen=True)
class DiTConfig:
    """SANA (``diffusers.SanaTransformer2DModel``) on the 1/32 latent, patch 1, linear attention."""

    num_layers: int = 28
    num_attention_heads: int = 36
    attention_head_dim: int = 32
    num_cross_attention_heads: int = 16
    cross_attention_head_dim: int = 72
    mlp_ratio: float = 2.5
    caption_channels: int = 2304
    sample_size: int = 32

    @property
    def width(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def diffusers_config(self, latent_channels: int) -> dict[str, Any]:
        return {
            "in_channels": latent_channels,
            "out_channels": latent_channels,
            "num_attention_heads": self.num_attention_heads,
            "attention_head_dim": self.attention_head_dim,
            "num_layers": self.num_layers,
            "num_cross_attention_heads": self.num_cross_attention_heads,
            "cross_attention_head_dim": self.cross_attention_head_dim,
            "cross_attention_dim": self.width,
            "caption_channels": self.caption_channels,
            "mlp_ratio": self.mlp_ratio,
            "dropout": 0.0,
            "attention_bias": False,
            "sample_size": self.sample_size,
            "patch_size": 1,
            "norm_elementwise_affine": False,
            "norm_eps": 1e-6,
        }


@dataclass(frozen=True)
class FlowConfig:
    """The one-step flow update (paper Sec. 3.2): scalar t, flow shift, variance guidance on/off."""

    timestep: int = 999
    num_train_timesteps: int = 1000
    flow_shift: float = 3.0
    variance_guidance: bool = True


@dataclass(frozen=True)
class LatentConfig:
    """The latent codec: y (``M`` ch at 1/64), z (``M // 2`` ch at 1/256), four-step context, heads.

    ``fuse_latent`` + ``fuse_aux`` channels form the analysis width (128 + 64 = 192 in the release).
    ``num_qualities > 1`` adds learned per-channel gain / inverse-gain vectors on y (variable rate).
    """

    M: int = 320
    fuse_latent: int = 128
    fuse_aux: int = 64
    head_width: int = 320
    scale_head_width: int = 192
    prompt_channels: int = 320
    num_qualities: int = 1
    scale_min: float = 0.11
    scale_max: float = 256.0
    scale_levels: int = 64
    # not in the release: a linear path beside g_a (latent 2x2 blocks -> y) and the mean head (y -> blocks),
    # which training initialises to the PCA code of the latent (docs/TRAINING.md, session 6)
    linear_path: bool = False
    # not in the release: the four-step context model's width (its adapters' middle and g_c's channels);
    # None keeps the release's, 2M inside with adapters of mean width. A wider y needs a narrower one to
    # fit ditic-small's 24 MiB (docs/TRAINING.md, session 10)
    context_width: int | None = None

    @property
    def N(self) -> int:
        return self.M // 2


@dataclass(frozen=True)
class PrompterConfig:
    """Latent-conditioned prompter: ``pooled_tokens`` from the prompt map + learned tokens -> MLP."""

    num_tokens: int = 77
    pooled_tokens: int = 48
    mode: str = "latent"


@dataclass(frozen=True)
class AuxConfig:
    """ELIC analysis transform ``g_a`` (``N`` wide, ``M`` ch out at 1/16), frozen in the release."""

    N: int = 192
    M: int = 320


@dataclass(frozen=True)
class CodecConfig:
    name: str = "ditic-official"
    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    prompter: PrompterConfig = field(default_factory=PrompterConfig)
    aux: AuxConfig = field(default_factory=AuxConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        m = self.latent.M
        if m % 8:
            raise ValueError(f"latent.M must be a multiple of 8 (4 context groups, z = M/2), got {m}")
        if self.latent.num_qualities < 1:
            raise ValueError(f"latent.num_qualities must be >= 1, got {self.latent.num_qualities}")
        if self.latent.context_width is not None and self.latent.context_width < 8:
            raise ValueError(f"latent.context_width must be >= 8 or None, got {self.latent.context_width}")
        if self.prompter.mode not in PROMPT_MODES:
            raise ValueError(f"prompter.mode must be one of {PROMPT_MODES}, got {self.prompter.mode!r}")
        widths = self.vae.decoder_block_out_channels
        if widths is not None and len(widths) != len(self.vae.block_out_channels):
            raise ValueError(f"vae.decoder_block_out_channels {widths} needs one width per stage "
                             f"({len(self.vae.block_out_channels)})")  # fmt: skip
        if not 0 < self.prompter.pooled_tokens <= self.prompter.num_tokens:
            raise ValueError(f"bad prompter token counts: {self.prompter}")

    @property
    def qualities(self) -> list[int]:
        return list(range(1, self.latent.num_qualities + 1))

    def replace(self, **changes: Any) -> CodecConfig:
        """A copy with top-level or dotted fields changed.

        ``cfg.replace(**{"flow.variance_guidance": False})`` switches variance guidance off."""
        top: dict[str, Any] = {}
        for key, value in changes.items():
            section, _, attr = key.partition(".")
            if attr:
                base = top.get(section, getattr(self, section))
                top[section] = dataclasses.replace(base, **{attr: value})
            else:
                top[section] = value
        return dataclasses.replace(self, **top)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        sections = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in sections:
                raise ValueError(f"unknown config field {key!r}")
            kind = _SECTION_TYPES.get(key)
            kwargs[key] = _section_from_dict(kind, value) if kind else value
        return cls(**kwargs)


_SECTION_TYPES: dict[str, type] = {
    "vae": VAEConfig,
    "dit": DiTConfig,
    "flow": FlowConfig,
    "latent": LatentConfig,
    "prompter": PrompterConfig,
    "aux": AuxConfig,
}


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def _section_from_dict(kind: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
    return kind(**{k: _as_tuple(v) for k, v in data.items()})


def _official() -> CodecConfig:
    return CodecConfig(name="ditic-official")


def _small() -> CodecConfig:
    return CodecConfig(
        name="ditic-small",
        vae=VAEConfig(
            block_out_channels=(16, 32, 64, 128, 128, 128),
            block_types=("ResBlock",) * 4 + ("EfficientViTBlock",) * 2,
            encoder_layers_per_block=(1, 1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 2, 2, 2, 2, 2),
            qkv_multiscales=((), (), (), (), (5,), (5,)),
            attention_head_dim=16,
            latent_channels=32,
            scaling_factor=1.0,
        ),
        dit=DiTConfig(
            num_layers=4,
            num_attention_heads=6,
            attention_head_dim=32,
            num_cross_attention_heads=4,
            cross_attention_head_dim=48,
            caption_channels=256,
        ),
        # the shipped model's latent codec since session 14 (docs/TRAINING.md): y as wide as the 2x2
        # latent block it codes (M = 128; sessions 11-13 shipped 96, 1-10 48), a context model narrowed to
        # 64 to keep the weights within 24 MiB (22.2 MiB), and the PCA-initialised linear path (session 7).
        # `ditic train --config ditic-small` trains this.
        latent=LatentConfig(
            M=128,
            context_width=64,
            linear_path=True,
            fuse_latent=32,
            fuse_aux=16,
            head_width=48,
            scale_head_width=32,
            prompt_channels=48,
            num_qualities=4,
        ),
        aux=AuxConfig(N=48, M=48),
    )


def _test() -> CodecConfig:
    return CodecConfig(
        name="ditic-test",
        vae=VAEConfig(
            block_out_channels=(8, 8, 16, 16, 16, 32),
            block_types=("ResBlock",) * 5 + ("EfficientViTBlock",),
            encoder_layers_per_block=(1, 1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1, 1),
            qkv_multiscales=((), (), (), (), (), (5,)),
            attention_head_dim=8,
            latent_channels=8,
            scaling_factor=1.0,
        ),
        dit=DiTConfig(
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=8,
            num_cross_attention_heads=2,
            cross_attention_head_dim=8,
            caption_channels=16,
        ),
        latent=LatentConfig(
            M=16,
            fuse_latent=8,
            fuse_aux=8,
            head_width=16,
            scale_head_width=8,
            prompt_channels=8,
            num_qualities=4,
        ),
        prompter=PrompterConfig(num_tokens=8, pooled_tokens=4),
        aux=AuxConfig(N=8, M=16),
    )


CONFIGS = {"ditic-official": _official, "ditic-small": _small, "ditic-test": _test}


def get_config(name: str) -> CodecConfig:
    """The named configuration (``ditic-official``, ``ditic-small``, ``ditic-test``)."""
    try:
        return CONFIGS[name]()
    except KeyError:
        raise ValueError(f"unknown config {name!r}; known: {sorted(CONFIGS)}") from None
