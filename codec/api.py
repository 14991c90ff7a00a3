"""The user API: ``load_codec`` and ``Codec`` (batched encode/decode of images to ``.dtic`` payloads).

Images of any size: padded right and bottom (replicate) to a multiple of 64, the y grid; z (1/256)
pads its own grid inside the latent codec, so no 256-pixel padding is paid. Images with the same padded
size are coded in one batch. The image policy (modes, 16-bit, alpha, EXIF orientation, ICC) is
``codec.image``'s; the byte layout is ``codec.bitstream``'s.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.profiler import record_function

from codec import autoencoder, bitstream, fastforms, image
from codec.config import CONFIGS, DECODERS, CodecConfig, get_config
from codec.errors import CheckpointError, DiticError, FormatError, ModelMismatchError
from codec.graphs import GraphCache
from codec.latent import CONTEXT_MODULES
from codec.model import PAD_MULTIPLE, DiTIC
from codec.weights import MODEL_ID_CHARS, canonical_state_dict, load_checkpoint, weights_hash

__all__ = ["load_codec", "Codec", "EncodedItem", "DecodedItem", "EMBEDDED_WEIGHTS"]

EMBEDDED_WEIGHTS = Path(__file__).resolve().parent / "weights"
BATCH_PIXELS = 1 << 22  # images per batch: as many as fit 4 Mpx of padded pixels (at least one)
_ENTROPY_MODULES = (*CONTEXT_MODULES, "entropy_bottleneck", "gaussian_conditional")
_warned: set[str] = set()


@dataclass(frozen=True)
class EncodedItem:
    payload: bytes
    width: int
    height: int
    bpp: float  # payload bits (header included) per image pixel
    enc_ms: float  # model time on the device (batch time shared among its images)
    entropy_ms: float  # entropy coding on the CPU (batch time shared among its images)


@dataclass(frozen=True)
class DecodedItem:
    image: Image.Image
    dec_ms: float
    entropy_ms: float


def _cast(model: DiTIC, dtype: torch.dtype) -> None:
    """Cast to ``dtype`` all but the entropy-parameter path, which keeps the checkpoint's precision so
    that payloads decode the same whatever dtype the rest of the model runs in."""
    for name, child in model.named_children():
        if name != "codec":
            child.to(dtype)
    for name, child in model.codec.named_children():
        if name not in _ENTROPY_MODULES:
            child.to(dtype)


def _leave_off_device(model: DiTIC, decode_only: bool) -> None:
    """Pin the float64 entropy-parameter path (built now, kept whatever happens to the weights); with
    ``decode_only`` on a GPU, move to host memory what a decoder never runs there: the encoders (DC-AE
    encoder, ELIC analysis, g_a, h_a) and the pinned path's fp32 originals, ~0.7 GiB for
    ditic-official in bf16. They stay in the model: its state dict and id are unchanged."""
    model.codec.freeze_entropy_path()
    if not decode_only or next(model.parameters()).device.type == "cpu":
        return
    parts = [getattr(model.codec, name) for name in CONTEXT_MODULES]
    parts += [model.vae.encoder, model.aux_codec, model.codec.g_a, model.codec.h_a]
    for part in parts:
        part.to("cpu")


def _seeded(cfg: CodecConfig) -> DiTIC:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = DiTIC(cfg)
    model.update()
    return model.eval()


def _warn_untrained(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        print(
            f"ditic: warning: no trained weights for {name!r}; using a seeded, untrained model "
            "(payloads are valid but the images will not look like the input)",
            file=sys.stderr,
        )


def load_codec(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    allow_untrained: bool = False,
    compile: bool = False,
    decode_memory_gib: float | None = None,
    decode_bytes_per_pixel: float | None = None,
    decode_only: bool = False,
    decoder: str | None = None,
) -> Codec:
    """A ``Codec`` for a named config (``ditic-small``, ``ditic-test``, ``ditic-official``) or a checkpoint.

    ``decoder``: ``perceptual`` (the default) or ``fidelity``, for a model that ships both DC-AE
    decoders (``vae.fidelity_decoder``): the same payloads, decoded for perceptual quality or for PSNR. A
    name may carry it as a suffix, ``ditic-small:fidelity``, so every job that takes a model name takes it.

    ``ditic-small`` loads the embedded weights when shipped, else a seeded untrained model (with a
    warning); ``ditic-test`` is always seeded and untrained; ``ditic-official`` needs converted weights
    at ``codec/weights/ditic-official.safetensors`` (``ditic convert-official``) unless
    ``allow_untrained`` (random weights, for benchmarks). ``compile`` runs the DC-AE encoder and decoder
    and the DiT through ``torch.compile`` (fused kernels; the first image of each size compiles for
    ~35-40 s on an H200, so it pays for long runs of one size, such as video frames or a benchmark).
    ``decode_memory_gib`` and ``decode_bytes_per_pixel``: the DC-AE decode's memory budget and its
    calibration (see ``Codec``).
    ``decode_only`` leaves the encoders (DC-AE encoder, ELIC analysis, g_a, h_a) and the fp32 originals
    of the float64 entropy path off the GPU, for restore jobs: ~0.7 GiB less for ``ditic-official`` in
    bf16; encoding then raises ``DiticError``.
    """
    name, suffix = split_decoder(str(name_or_path))
    if suffix and decoder and suffix != decoder:
        raise ValueError(f"{name_or_path!r} names the {suffix} decoder, but decoder={decoder!r}")
    options = {"compile": compile, "decode_memory_gib": decode_memory_gib,
               "decode_bytes_per_pixel": decode_bytes_per_pixel, "decode_only": decode_only,
               "decoder": suffix or decoder or "perceptual"}  # fmt: skip
    embedded = EMBEDDED_WEIGHTS / f"{name}.safetensors"
    if name in CONFIGS and name != "ditic-test" and embedded.is_file():
        return _from_checkpoint(embedded, device, dtype, **options)
    if name in CONFIGS:
        if name == "ditic-official" and not allow_untrained:
            raise CheckpointError(
                f"no weights for ditic-official at {embedded}: convert the release with "
                "`ditic convert-official RELEASE.pth OUT.safetensors` and load OUT, "
                "or pass allow_untrained=True for random weights"
            )
        model = _seeded(get_config(name))
        model_id = weights_hash(canonical_state_dict(model))[:MODEL_ID_CHARS]
        model.use_decoder(options.pop("decoder"))
        if name != "ditic-test":
            _warn_untrained(name)
        return Codec(model, name, model_id, trained=False, device=device, dtype=dtype, **options)
    path = Path(name)
    if not path.is_file():
        raise CheckpointError(f"{name!r} is neither a known config ({sorted(CONFIGS)}) nor a checkpoint file")
    return _from_checkpoint(path, device, dtype, **options)


def split_decoder(name: str) -> tuple[str, str | None]:
    """(model name, decoder) of ``NAME:DECODER`` (``ditic-small:fidelity``); (name, None) without one."""
    head, sep, tail = name.rpartition(":")
    return (head, tail) if sep and tail in DECODERS else (name, None)


def _from_checkpoint(path: Path, device: str | torch.device, dtype: torch.dtype, **options) -> Codec:  # noqa: ANN003
    model, info = load_checkpoint(path)
    model.use_decoder(options.pop("decoder", "perceptual"))
    model.update()
    return Codec(
        model, info.config.name, info.model_id, trained=info.trained, device=device, dtype=dtype, **options
    )  # fmt: skip


def _buckets(sizes: Sequence[tuple[int, ...]], batch_pixels: int) -> list[list[int]]:
    """Indexes grouped by key (first two entries = padded height, width), each group cut to the budget."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, key in enumerate(sizes):
        groups.setdefault(key, []).append(i)
    out = []
    for key, idx in groups.items():
        per_batch = max(1, batch_pixels // (key[0] * key[1]))
        out += [idx[i : i + per_batch] for i in range(0, len(idx), per_batch)]
    return out


def _coded(n: int) -> int:
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


class Codec:
    """A loaded model plus the container: encode images to payloads and back. See ``load_codec``."""

    def __init__(
        self,
        model: DiTIC,
        name: str,
        model_id: str,
        *,
        trained: bool,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_pixels: int = BATCH_PIXELS,
        max_pixels: int = bitstream.DEFAULT_MAX_PIXELS,
        cuda_graphs: bool = True,
        compile: bool = False,
        decode_memory_gib: float | None = None,
        decode_bytes_per_pixel: float | None = None,
        decode_only: bool = False,
    ):
        _cast(model, dtype)
        self.model = model.to(device).eval()
        self.decode_only = decode_only
        _leave_off_device(self.model, decode_only)
        self.name, self.model_id, self.trained = name, model_id, trained
        self.device, self.dtype = torch.device(device), dtype
        self.batch_pixels, self.max_pixels = batch_pixels, max_pixels
        # DC-AE decode (codec.autoencoder): None tiles only what does not fit the budget, True always
        # follows the tile plan, False never tiles. The budget in GiB (None: 4 on CUDA, none elsewhere;
        # math.inf: none) covers the decoder's activations and output, not the resident weights.
        self.tiled_decode: bool | None = None
        self.decode_memory_gib = decode_memory_gib
        self.decode_bytes_per_pixel = decode_bytes_per_pixel  # a measured value calibrates the estimate
        # past the budget: "auto" (None: $DITIC_DECODE_PLAN, else auto) the exact split (its global part
        # streamed where needed, and always on a compiled codec), "tiles" blended tiles, "split" only
        # the split (autoencoder.plan_for)
        self.decode_plan_kind: str | None = None
        # the decoder's heads (g_s, scale, aux, prompt), prompter and DiT step replay one CUDA graph per
        # shape on a GPU (codec.graphs); eager elsewhere. Launched op by op, the heads alone took 4.9 ms
        # at 1024² on an H200 (tools/decode_split.py).
        self._dit_step = GraphCache(self.model.latent_from_y, name="heads and DiT step")
        self._dit_step.enabled = self._dit_step.enabled and self.device.type == "cuda" and cuda_graphs
        # compile: the DC-AE encoder and decoder in channels-last memory format through torch.compile,
        # in place (parameter names, and so the model id, stay as they are); on a GPU the compiled
        # decoder is also replayed from a CUDA graph per latent shape, all shapes in one memory pool,
        # where twice the decode plan's estimate fits the memory budget (autoencoder.fits_graphed).
        # At 1024² on an H200 (tools/dcae_variants.py): 35 ms compiled, 30 channels-last, 23 graphed.
        # The DiT is compiled too (fused elementwise ops), inside the heads + DiT graph: 9.5 -> 6.6 ms
        # at 1024², 28.8 -> 18.7 ms at 2048², 48.8 dB from the uncompiled step (tools/decode_split.py).
        self._vae_decoder: GraphCache | None = None
        if compile:
            vae = self.model.vae
            for part in (vae.decoder,) if decode_only else (vae.encoder, vae.decoder):
                part.to(memory_format=torch.channels_last)
                fastforms.use_fast_forms(part)  # faster kernels under compile (codec.fastforms)
                part.compile(dynamic=False)
            fastforms.use_fast_forms(self.model.DiT)
            self.model.DiT.compile(dynamic=False)
            if self.device.type == "cuda" and cuda_graphs:
                self._vae_decoder = GraphCache(self._run_vae_decoder, name="DC-AE decoder", share_pool=True)

    @property
    def config(self) -> CodecConfig:
        return self.model.cfg

    @property
    def qualities(self) -> list[int]:
        return self.model.qualities

    @property
    def decoder(self) -> str:
        """Which DC-AE decoder decodes: ``perceptual`` or ``fidelity`` (``load_codec``'s ``decoder``)."""
        return self.model.decoder_in_use

    def __repr__(self) -> str:
        which = "" if self.decoder == "perceptual" else f", decoder={self.decoder}"
        return (f"Codec({self.name!r}, model_id={self.model_id}, trained={self.trained}, "
                f"device={self.device}{which})")  # fmt: skip

    # --- encoding ------------------------------------------------------------------------------
    def encode(self, images: Iterable[Image.Image | np.ndarray], quality: int | None = None) -> list[bytes]:
        return [item.payload for item in self.encode_items(images, quality)]

    def encode_items(
        self, images: Iterable[Image.Image | np.ndarray], quality: int | None = None
    ) -> list[EncodedItem]:
        """One ``EncodedItem`` per image, in order. ``quality`` defaults to the highest."""
        if self.decode_only:
            raise DiticError(f"{self!r} was loaded with decode_only=True: load it without to encode")
        quality = max(self.qualities) if quality is None else quality
        self.model._check_quality(quality)
        prepared = [image.prepare(im, max_pixels=self.max_pixels) for im in images]
        items: list[EncodedItem | None] = [None] * len(prepared)
        sizes = [(_coded(p.height), _coded(p.width)) for p in prepared]
        for idx in _buckets(sizes, self.batch_pixels):
            for i, item in zip(idx, self._encode_batch([prepared[i] for i in idx], quality), strict=True):
                items[i] = item
        return items  # type: ignore[return-value]

    @torch.no_grad()
    def _encode_batch(self, batch: list[image.PreparedImage], quality: int) -> list[EncodedItem]:
        start = time.perf_counter()
        x = self._to_device(batch)
        strings = self.model.compress(x, quality)
        total_ms = (time.perf_counter() - start) * 1e3
        entropy_ms = self.model.codec.coding_seconds * 1e3
        items = []
        for p, s in zip(batch, strings, strict=True):
            header = bitstream.Header(
                model_id=self.model_id, width=p.width, height=p.height, quality=quality, mode=p.mode,
                source_mode=p.source_mode, bit_depth=p.bit_depth,
                pad_right=x.shape[-1] - p.width, pad_bottom=x.shape[-2] - p.height,
            )  # fmt: skip
            payload = bitstream.pack(header, s, p.metadata)
            items.append(
                EncodedItem(
                    payload,
                    p.width,
                    p.height,
                    8 * len(payload) / (p.width * p.height),
                    (total_ms - entropy_ms) / len(batch),
                    entropy_ms / len(batch),
                )  # fmt: skip
            )
        return items

    def _to_device(self, batch: list[image.PreparedImage]) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1], padded to the y grid, on the model's device in its dtype.

        The uint8 pixels travel (a quarter of float32's bytes) and are converted and padded there,
        so a GPU worker's single CPU thread does not spend longer on preparing than the GPU on coding.
        The arithmetic is ``image.to_tensor`` + ``image.pad``'s, in float32, on either device.
        """
        padded = []
        for p in batch:
            with warnings.catch_warnings():  # read-only arrays (Ray's) are only read: copied below
                warnings.simplefilter("ignore", UserWarning)
                pixels = torch.from_numpy(p.rgb).to(self.device, non_blocking=True)
            x = pixels.permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1.0
            padded.append(image.pad(x, PAD_MULTIPLE)[0])
        return torch.cat(padded).to(self.dtype)

    # --- decoding ------------------------------------------------------------------------------
    def info(self, payload: bytes) -> bitstream.Header:
        """The payload's header, without decoding."""
        return bitstream.read_header(payload, max_pixels=self.max_pixels)

    def decode(self, payloads: Iterable[bytes]) -> list[Image.Image]:
        return [item.image for item in self.decode_items(payloads)]

    def decode_items(self, payloads: Iterable[bytes]) -> list[DecodedItem]:
        """One ``DecodedItem`` per payload, in order; every payload is checked before any decoding."""
        unpacked = [bitstream.unpack(p, max_pixels=self.max_pixels) for p in payloads]
        for header, strings, _ in unpacked:
            self._check_header(header)
            if len(strings) != 2:
                raise FormatError(f"expected 2 entropy-coded strings (z, y), the payload has {len(strings)}")
        keys = [(h.coded_height, h.coded_width, h.quality) for h, _, _ in unpacked]
        items: list[DecodedItem | None] = [None] * len(unpacked)
        for idx in _buckets(keys, self.batch_pixels):
            for i, item in zip(idx, self._decode_batch([unpacked[i] for i in idx]), strict=True):
                items[i] = item
        return items  # type: ignore[return-value]

    def _check_header(self, header: bitstream.Header) -> None:
        if header.model_id != self.model_id:
            raise ModelMismatchError(
                f"payload was encoded by model {header.model_id}, but this codec is {self.name} "
                f"(model {self.model_id}); decode it with the model that encoded it"
            )
        if header.quality not in self.qualities:
            raise ModelMismatchError(f"payload quality {header.quality} not in this model's {self.qualities}")
        if header.coded_width % PAD_MULTIPLE or header.coded_height % PAD_MULTIPLE:
            raise FormatError(
                f"coded size {header.coded_width}x{header.coded_height} is not a multiple of {PAD_MULTIPLE}"
            )

    @torch.no_grad()
    def _decode_batch(self, batch: list[tuple[bitstream.Header, list[bytes], dict]]) -> list[DecodedItem]:
        first = batch[0][0]
        latent_shape = (first.coded_height // PAD_MULTIPLE, first.coded_width // PAD_MULTIPLE)
        start = time.perf_counter()
        with record_function("decode.latent_hat"):  # profiler ranges (tools/decode_gap.py); ~us when off
            latent_hat = self.latent_hat([s for _, s, _ in batch], latent_shape, first.quality)
        with record_function("decode.pixels"):
            x_hat = self.decode_pixels(latent_hat)
        with record_function("decode.to_images"):
            images = self.to_images(x_hat, batch)
        total_ms = (time.perf_counter() - start) * 1e3
        entropy_ms = self.model.codec.coding_seconds * 1e3
        dec_ms = (total_ms - entropy_ms) / len(batch)
        return [DecodedItem(im, dec_ms, entropy_ms / len(batch)) for im in images]

    @staticmethod
    def to_images(x_hat: torch.Tensor, batch: list[tuple[bitstream.Header, list[bytes], dict]]
                  ) -> list[Image.Image]:  # fmt: skip
        """Decoded pixels (B, 3, H, W) in [-1, 1] as the payloads' images (``bitstream.unpack``'s
        tuples): uint8 on the host, cropped to the header's size, in its mode, with its metadata back."""
        pixels = image.to_uint8(x_hat)
        return [image.restore(np.ascontiguousarray(rgb[: header.height, : header.width]), header, metadata)
                for (header, _, metadata), rgb in zip(batch, pixels, strict=True)]  # fmt: skip

    @torch.no_grad()
    def latent_hat(
        self, strings: list[list[bytes]], latent_shape: tuple[int, int], quality: int
    ) -> torch.Tensor:
        """Entropy decoding, then heads + DiT step (graphed on a GPU): the DC-AE's input, scaled."""
        with record_function("decode.entropy"):
            y_hat, y_scales = self.model.decompress_latent(strings, latent_shape, quality)
        inverse = self.model.codec.inverse_gain_for(quality, y_hat.shape[0], y_hat.device, self.dtype)
        with record_function("decode.heads_dit"):
            return self._dit_step(y_hat.to(self.dtype), y_scales.to(self.dtype), inverse)

    # --- DC-AE decode within the memory budget ---------------------------------------------------
    def _decode_options(self) -> dict:
        budget = None if self.decode_memory_gib is None else self.decode_memory_gib * autoencoder.GIB
        return {"budget_bytes": budget, "bytes_per_pixel": self.decode_bytes_per_pixel,
                "kind": self.decode_plan_kind}  # fmt: skip

    def decode_plan(self, width: int, height: int, batch: int = 1) -> autoencoder.DecodePlan:
        """How ``batch`` images of this size (padded to the y grid) would go through the DC-AE decoder."""
        h, w = _coded(height) // autoencoder.DOWNSCALE, _coded(width) // autoencoder.DOWNSCALE
        shape = torch.Size((batch, self.config.vae.latent_channels, h, w))
        latent = (shape, self.dtype, self.device)
        return autoencoder.plan_for(self.model.vae, latent, self.tiled_decode, **self._decode_options())

    @torch.no_grad()
    def decode_pixels(self, latent_hat: torch.Tensor) -> torch.Tensor:
        """x_hat (B, 3, 32h, 32w) in [-1, 1] from the flow's scaled latent (B, C, h, w), by the tile plan."""
        options = self._decode_options()
        decoder = self._vae_decoder
        if decoder is not None:  # graphs hold ~2x the working set: only where that fits the budget
            plan = autoencoder.plan_for(self.model.vae, latent_hat, self.tiled_decode, **options)
            budget = options["budget_bytes"] or autoencoder.default_budget_bytes(self.device)
            decoder = decoder if autoencoder.fits_graphed(plan, budget) else None
        return self.model.decode_pixels(latent_hat, self.tiled_decode, decoder=decoder, **options)

    def _run_vae_decoder(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.vae.decoder(latent.contiguous(memory_format=torch.channels_last))
