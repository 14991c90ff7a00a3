"""The codecs ``ditic evaluate`` compares, behind one interface: code a list of images at one
quality, return for each the payload size, the decoded pixels and the encode/decode times.

Classical codecs (``jpeg``, ``webp``, ``avif``, ``jxl``) come from :mod:`codec.classical` and are
timed per image on the CPU. Anything else names a learned codec for :func:`codec.api.load_codec`
(``ditic-small``, ``ditic-test``, or a ``.safetensors`` checkpoint); its times are the model's own
(device time plus CPU entropy coding, as ``EncodedItem``/``DecodedItem`` report them), measured
after one warm-up on accelerators so that one-off start-up costs stay out of the numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from codec.classical import CODECS, ClassicalCodec
from codec.errors import FormatError

__all__ = ["Coded", "Contender", "ClassicalContender", "LearnedContender", "make_contender"]


@dataclass(frozen=True)
class Coded:
    """One image coded at one quality."""

    num_bytes: int
    image: np.ndarray  # (H, W, 3) uint8, the decoded image
    enc_ms: float
    dec_ms: float


class Contender(Protocol):
    name: str
    description: str
    qualities: list[int]

    def code(self, images: list[np.ndarray], quality: int) -> list[Coded]: ...


def _check_size(decoded: np.ndarray, original: np.ndarray, name: str) -> np.ndarray:
    if decoded.shape != original.shape:
        raise FormatError(f"{name} decoded a {decoded.shape} image from a {original.shape} input")
    return decoded


class ClassicalContender:
    """A Pillow codec, timed per image with ``time.perf_counter``."""

    def __init__(self, codec: ClassicalCodec) -> None:
        self.codec = codec
        self.name, self.description = codec.name, codec.description
        self.qualities = list(codec.qualities)

    def code(self, images: list[np.ndarray], quality: int) -> list[Coded]:
        out = []
        for rgb in images:
            start = time.perf_counter()
            data = self.codec.encode(rgb, quality)
            middle = time.perf_counter()
            decoded = np.asarray(self.codec.decode(data))
            end = time.perf_counter()
            decoded = _check_size(decoded, rgb, self.name)
            out.append(Coded(len(data), decoded, (middle - start) * 1e3, (end - middle) * 1e3))
        return out


class LearnedContender:
    """A DiT-IC model through the batched ``Codec`` API (loaded lazily, on first use)."""

    def __init__(self, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        from codec.api import load_codec, split_decoder

        self.codec = load_codec(name, device=device, dtype=dtype)
        model, decoder = split_decoder(name)  # NAME:fidelity, the same model's other decoder
        self.name = Path(model).stem if model.endswith(".safetensors") else model
        self.name += f":{decoder}" if decoder else ""
        state = "trained" if self.codec.trained else "UNTRAINED (seeded weights: numbers are meaningless)"
        self.description = (
            f"DiT-IC {self.codec.name}, model {self.codec.model_id}, {self.codec.decoder} decoder, {state}, "
            f"{device}, {str(dtype)[6:]}"
        )
        self.qualities = list(self.codec.qualities)
        self._warm = False

    def _warm_up(self, image: np.ndarray, quality: int) -> None:
        crop = np.ascontiguousarray(image[:64, :64])
        self.codec.decode_items([item.payload for item in self.codec.encode_items([crop], quality)])
        self._warm = True

    def code(self, images: list[np.ndarray], quality: int) -> list[Coded]:
        if not self._warm and images and self.codec.device.type != "cpu":  # CUDA: lazy init, autotuning
            self._warm_up(images[0], quality)
        encoded = self.codec.encode_items(images, quality)
        decoded = self.codec.decode_items([item.payload for item in encoded])
        return [
            Coded(
                len(e.payload),
                _check_size(np.asarray(d.image.convert("RGB")), rgb, self.name),
                e.enc_ms + e.entropy_ms,
                d.dec_ms + d.entropy_ms,
            )
            for rgb, e, d in zip(images, encoded, decoded, strict=True)
        ]


def make_contender(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Contender:
    """A classical codec by name, else a learned one (config name or checkpoint path)."""
    if name.lower() in CODECS:
        return ClassicalContender(CODECS[name.lower()])
    return LearnedContender(name, device=device, dtype=dtype)
