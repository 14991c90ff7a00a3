"""Classical image codecs as baselines: JPEG, WebP, AVIF (Pillow built in) and JPEG XL
(``pillow-jxl-plugin``), each behind the same two calls, ``encode(image, quality) -> bytes`` and
``decode(bytes) -> PIL.Image``.

Settings are what a careful baseline uses, not what gives the smallest files at any cost:

* **JPEG** (libjpeg-turbo): 4:2:0, optimised Huffman tables, baseline. Its rate has a floor:
  at quality ≤ 2 every quantiser saturates at 255 and photos still cost ~0.06–0.17 bpp, so JPEG
  cannot reach the 0.03 bpp end of the range; its curve simply starts higher.
* **WebP** (libwebp): lossy, ``method=4`` (cwebp's default).
* **AVIF** (libavif 1.x via Pillow): ``speed=6``, 4:2:0, full range. Quality 0 is the largest
  quantiser; it reaches ~0.03 bpp on smooth photos, ~0.07 bpp on average on detailed ones.
* **JPEG XL** (libjxl): ``effort=7`` (cjxl's default). Pillow's plugin takes a quality only;
  libjxl maps quality 0 to its largest distance (25), ~0.035–0.3 bpp on photos.

The default sweeps (:attr:`ClassicalCodec.qualities`) span about 0.03–0.6 bpp on photos of
0.3–4 megapixels (measured on the training photos, never on the dev set), lowest rate first.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from codec.errors import FormatError, InputImageError

__all__ = ["CODECS", "ClassicalCodec", "get_codec"]


@dataclass(frozen=True)
class ClassicalCodec:
    """One Pillow-backed codec: a file format plus the fixed encoder options of the baseline."""

    name: str
    description: str
    pil_format: str
    qualities: tuple[int, ...]
    """The default rate sweep, lowest rate first."""
    quality_range: tuple[int, int]
    options: dict[str, Any] = field(default_factory=dict)
    plugin: str | None = None
    """A module whose import registers the format with Pillow (and the package that has it)."""

    def _ensure_plugin(self) -> None:
        if self.plugin is None:
            return
        module, package = self.plugin.split(":")
        try:
            __import__(module)
        except ImportError as e:
            raise ModuleNotFoundError(
                f"{self.name} needs `pip install {package}` (part of the project's `eval` extra)"
            ) from e

    def encode(self, image: Image.Image | np.ndarray, quality: int) -> bytes:
        """Compress an RGB image (PIL image of any mode, or an H×W×3 uint8 array) to bytes."""
        lo, hi = self.quality_range
        if isinstance(quality, bool) or not isinstance(quality, int | np.integer) or not lo <= quality <= hi:
            raise ValueError(f"{self.name} quality must be an integer in [{lo}, {hi}], got {quality!r}")
        self._ensure_plugin()
        buffer = io.BytesIO()
        _to_rgb(image).save(buffer, format=self.pil_format, quality=int(quality), **self.options)
        return buffer.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        """Decode bytes from :meth:`encode` to an RGB PIL image (the JPEG XL plugin fails with
        RuntimeError on bad data, Pillow with OSError and friends: both become FormatError)."""
        self._ensure_plugin()
        try:
            with Image.open(io.BytesIO(data), formats=[self.pil_format]) as image:
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as e:
            raise FormatError(f"not a decodable {self.name} stream ({len(data)} bytes): {e}") from e


def _to_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputImageError(f"expected an H×W×3 uint8 array, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or numpy array, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise InputImageError(f"empty image {image.width}x{image.height}")
    return image.convert("RGB") if image.mode != "RGB" else image


CODECS: dict[str, ClassicalCodec] = {
    c.name: c
    for c in (
        ClassicalCodec(
            "jpeg", "JPEG (libjpeg-turbo, 4:2:0, optimised Huffman)", "JPEG",
            qualities=(3, 5, 8, 12, 20, 30, 50), quality_range=(1, 95),
            options={"optimize": True, "subsampling": "4:2:0"},
        ),
        ClassicalCodec(
            "webp", "WebP (libwebp lossy, method 4)", "WEBP",
            qualities=(0, 5, 15, 30, 50, 75), quality_range=(0, 100),
            options={"method": 4},
        ),
        ClassicalCodec(
            "avif", "AVIF (libavif via Pillow, speed 6, 4:2:0)", "AVIF",
            qualities=(0, 10, 20, 30, 40, 50, 60), quality_range=(0, 100),
            options={"speed": 6, "subsampling": "4:2:0"},
        ),
        ClassicalCodec(
            "jxl", "JPEG XL (libjxl, effort 7)", "JXL",
            qualities=(0, 10, 20, 30, 50, 60, 70), quality_range=(0, 100),
            options={"effort": 7, "lossless_jpeg": False}, plugin="pillow_jxl:pillow-jxl-plugin",
        ),
    )
}


def get_codec(name: str) -> ClassicalCodec:
    """The classical codec called ``name`` (``jpeg``, ``webp``, ``avif``, ``jxl``)."""
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown classical codec {name!r}; choose from {', '.join(CODECS)}") from None
