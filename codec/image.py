"""Image I/O policy: what an input image becomes before coding, and what decoding gives back.

The model codes 8-bit RGB only. Everything else is mapped onto that, losing as little as we can:

* EXIF orientation is applied first (``ImageOps.exif_transpose``): the coded pixels are upright,
  and the EXIF block we keep says orientation 1.
* ICC profile, EXIF and XMP are kept verbatim as container metadata (``ICCP``, ``EXIF``, ``XMP ``)
  and attached again on decoding (``image.info``). The ICC profile is dropped when the colours were
  converted from another colour space (CMYK, YCbCr, LAB, HSV), since it describes the old space.
* RGB is coded as is. Greyscale (L, 1, I, I;16, F) is coded as RGB with equal channels and decoded
  back to L. RGBA, LA, PA and P with transparency: colour coded lossily, the alpha plane losslessly
  (zlib, ``ALPH`` chunk); decoded to RGBA, or LA for greyscale inputs.
* 16-bit samples are scaled to 8 bits (``round(v / 257)``). Mode ``I`` counts as 16-bit when a
  value exceeds 255; mode ``F`` in [0, 1] is scaled by 255, otherwise clipped to [0, 255]. The
  source mode and bit depth go into the header (``PreparedImage.source_mode/bit_depth``).
* Decompression-bomb guard: an image of more than ``max_pixels`` pixels is refused from its header,
  before its pixels are decoded (``InputImageError``); so are corrupt, truncated and empty files.

Tensor helpers work on batches of equal-size images: ``to_tensor`` -> (B, 3, H, W) in [-1, 1],
``pad`` to a multiple (replicate or reflect, right and bottom), ``crop`` back, ``to_uint8``/``to_pil``.
"""

from __future__ import annotations

import io
import os
import warnings
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F

from codec import host
from codec.bitstream import ALPHA, DEFAULT_MAX_PIXELS, EXIF, ICC, SOURCE_MODES, XMP, Header
from codec.errors import FormatError, InputImageError

__all__ = [
    "PreparedImage",
    "open_image",
    "prepare",
    "restore",
    "to_tensor",
    "pad",
    "crop",
    "to_uint8",
    "to_pil",
]

_FOREIGN_COLOUR = {"CMYK", "YCbCr", "LAB", "HSV"}  # their ICC profile no longer applies once in RGB
_GREY = {"L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PreparedImage:
    """An image after the policy: the 8-bit RGB pixels to code and what the header must say."""

    rgb: np.ndarray  # (H, W, 3) uint8
    mode: str  # what decoding returns: RGB, L, RGBA, LA
    source_mode: str
    bit_depth: int
    metadata: dict[str, bytes] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def open_image(
    source: str | os.PathLike | bytes | BinaryIO, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open and fully decode an image file; anything unreadable or too large is ``InputImageError``."""
    name = os.fspath(source) if isinstance(source, str | os.PathLike) else "image"
    if isinstance(source, bytes | bytearray):
        if not source:
            raise InputImageError(f"cannot read {name}: it is empty (0 bytes)")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            image = Image.open(source)
            _check_pixels(image, max_pixels, name)
            image.load()
    except InputImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as e:
        if isinstance(source, str | os.PathLike) and os.path.isfile(source) and os.path.getsize(source) == 0:
            raise InputImageError(f"cannot read {name}: it is empty (0 bytes)") from e
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        if isinstance(e, UnidentifiedImageError):
            raise InputImageError(f"cannot read {name}: not an image format Pillow knows, or corrupt") from e
        raise InputImageError(f"cannot read {name}: corrupt or truncated image ({e})") from e
    return image


def _check_pixels(image: Image.Image, max_pixels: int, name: str = "image") -> None:
    w, h = image.size
    if w * h > max_pixels:
        raise InputImageError(f"{name} has {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
    if w < 1 or h < 1:
        raise InputImageError(f"{name} is empty ({w}x{h})")


def _from_array(array: np.ndarray) -> tuple[Image.Image, int]:
    """A PIL image of an HxW[xC] uint8/uint16 array, and its bit depth (Pillow has no 16-bit colour)."""
    if array.dtype not in (np.uint8, np.uint16):
        raise InputImageError(f"image arrays must be uint8 or uint16, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), "L" if array.dtype == np.uint8 else "I;16"), 8
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise InputImageError(f"image arrays must be HxW or HxWxC with C in 1..4, got shape {array.shape}")
    depth = 8 if array.dtype == np.uint8 else 16
    array8 = np.ascontiguousarray(array if depth == 8 else _to_8bit(array))
    return Image.fromarray(array8, {2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]), depth


def _to_8bit(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _grey_to_8bit(image: Image.Image) -> tuple[np.ndarray, int]:
    """(H, W) uint8 and the source bit depth of a greyscale image of any depth."""
    values = np.asarray(image)
    if image.mode == "1":
        return values.astype(np.uint8) * 255, 1
    if image.mode == "L":
        return values, 8
    if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
        return _to_8bit(np.clip(values, 0, 65535)), 16 if image.mode != "I" else 32
    if image.mode == "F" and values.size and 0.0 <= values.min() and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8), 32


def _metadata(image: Image.Image, source_mode: str) -> dict[str, bytes]:
    metadata = {}
    icc = image.info.get("icc_profile")
    if icc and source_mode not in _FOREIGN_COLOUR:
        metadata[ICC] = bytes(icc)
    exif = image.getexif()
    if len(exif):
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1
        metadata[EXIF] = exif.tobytes()
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if xmp:
        metadata[XMP] = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    return metadata


def _alpha(image: Image.Image) -> np.ndarray | None:
    if image.mode in ("RGBa", "La"):
        image = image.convert("RGBA")
    if (image.mode == "P" and "transparency" in image.info) or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        return np.asarray(image.getchannel("A"))
    return None


def _colour(image: Image.Image) -> tuple[np.ndarray, bool, int]:
    """(H, W, 3) uint8 colour, whether the source is greyscale, and its bit depth."""
    if image.mode in _GREY or image.mode in ("LA", "La"):
        grey, depth = _grey_to_8bit(image if image.mode in _GREY else image.convert("LA").getchannel("L"))
        return np.repeat(grey[:, :, None], 3, axis=2), True, depth
    try:
        rgb = (
            image.convert("RGBA").convert("RGB")
            if image.mode in ("RGBa", "PA", "P")
            else image.convert("RGB")
        )
    except ValueError as e:
        raise InputImageError(f"cannot convert an image of mode {image.mode} to RGB: {e}") from e
    return np.asarray(rgb), False, 8


def prepare(image: Image.Image | np.ndarray, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> PreparedImage:
    """Apply the policy to a PIL image or an HxW[xC] uint8/uint16 array."""
    array_depth = 8
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return _prepare_rgb8(image, max_pixels)  # the pipeline's case: no PIL round trip, no copy
    if isinstance(image, np.ndarray):
        image, array_depth = _from_array(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    _check_pixels(image, max_pixels)
    source_mode = image.mode if image.mode in SOURCE_MODES else "RGB"
    upright = ImageOps.exif_transpose(image)  # a copy: the caller's image is left alone
    metadata = _metadata(upright, source_mode)
    rgb, grey, depth = _colour(upright)
    alpha = _alpha(upright)
    mode = ("LA" if grey else "RGBA") if alpha is not None else ("L" if grey else "RGB")
    if alpha is not None:
        metadata[ALPHA] = zlib.compress(np.ascontiguousarray(alpha).tobytes(), 9)
    return PreparedImage(
        np.ascontiguousarray(rgb), mode, source_mode, depth if array_depth == 8 else array_depth, metadata
    )


def _prepare_rgb8(array: np.ndarray, max_pixels: int) -> PreparedImage:
    """An HxWx3 uint8 array is already what the policy produces: RGB, 8-bit, no metadata."""
    height, width = array.shape[:2]
    if width * height > max_pixels:
        raise InputImageError(
            f"image has {width}x{height} = {width * height} pixels, above the limit of {max_pixels}"
        )
    if width < 1 or height < 1:
        raise InputImageError(f"image is empty ({width}x{height})")
    return PreparedImage(np.ascontiguousarray(array), "RGB", "RGB", 8, {})


def _decode_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    inflater = zlib.decompressobj()
    try:
        plane = inflater.decompress(data, width * height + 1)
    except zlib.error as e:
        raise FormatError(f"alpha plane is corrupt: {e}") from e
    if len(plane) != width * height or not inflater.eof or inflater.unconsumed_tail:
        raise FormatError(f"alpha plane does not hold {width}x{height} bytes")
    return np.frombuffer(plane, dtype=np.uint8).reshape(height, width)


def restore(rgb: np.ndarray, header: Header, metadata: dict[str, bytes] | None = None) -> Image.Image:
    """The decoded image in the header's mode, with its ICC/EXIF/XMP and alpha plane back."""
    metadata = metadata or {}
    if rgb.shape != (header.height, header.width, 3) or rgb.dtype != np.uint8:
        raise ValueError(
            f"expected ({header.height}, {header.width}, 3) uint8 pixels, got {rgb.shape} {rgb.dtype}"
        )
    image = Image.fromarray(rgb, "RGB")
    if header.mode in ("L", "LA"):
        image = image.convert("L")
    if header.has_alpha:
        alpha = Image.fromarray(_decode_alpha(metadata[ALPHA], header.width, header.height), "L")
        image = image.convert("LA" if header.mode == "LA" else "RGBA")
        image.putalpha(alpha)
    for tag, key in ((ICC, "icc_profile"), (EXIF, "exif"), (XMP, "xmp")):
        if tag in metadata:
            image.info[key] = metadata[tag]
    return image


# ----------------------------------------------------------------------------- tensors


def to_tensor(images: list[np.ndarray | Image.Image] | np.ndarray) -> Tensor:
    """Equal-size RGB images (HxWx3 uint8 arrays or RGB PIL images) -> (B, 3, H, W) float32 in [-1, 1]."""
    arrays = [np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im) for im in images]
    if not arrays or any(a.shape != arrays[0].shape or a.dtype != np.uint8 for a in arrays):
        raise ValueError(
            f"expected equal-size HxWx3 uint8 images, got {[(a.shape, a.dtype) for a in arrays]}"
        )
    if arrays[0].ndim != 3 or arrays[0].shape[2] != 3:
        raise ValueError(f"expected HxWx3 images, got shape {arrays[0].shape}")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, 3, H, W)
    return x.float() / 127.5 - 1.0


def pad(x: Tensor, multiple: int, mode: str = "replicate") -> tuple[Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) right and bottom to multiples of ``multiple``; returns (x, (pad_right, pad_bottom)).

    ``reflect`` falls back to ``replicate`` where the image is too small to reflect.
    """
    if mode not in ("replicate", "reflect"):
        raise ValueError(f"mode must be 'replicate' or 'reflect', got {mode!r}")
    h, w = x.shape[-2:]
    pad_right, pad_bottom = -w % multiple, -h % multiple
    if pad_right == pad_bottom == 0:
        return x, (0, 0)
    if mode == "reflect" and (pad_right >= w or pad_bottom >= h):
        mode = "replicate"
    return F.pad(x, (0, pad_right, 0, pad_bottom), mode=mode), (pad_right, pad_bottom)


def crop(x: Tensor, width: int, height: int) -> Tensor:
    """The top-left ``height x width`` of (B, C, H, W)."""
    return x[..., :height, :width]


def to_uint8(x: Tensor, pinned: bool = True) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 (clamped, rounded), contiguous. The interleave to
    H, W, 3 happens where ``x`` is (on a GPU: before the copy to the host), not in numpy afterwards: a
    strided transpose of a 2048² image took 31-35 ms on one CPU core (session 17). From a GPU the copy
    goes into page-locked host memory (torch's caching host allocator) where ``pinned``: a pageable copy
    is staged through a driver buffer (tools/kernel_bench.py --to-host measures both)."""
    x = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return host.to_numpy(x.to(torch.uint8).permute(0, 2, 3, 1).contiguous(), pinned)


def to_pil(x: Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> RGB PIL images."""
    return [Image.fromarray(a, "RGB") for a in to_uint8(x)]
