"""Training images: listed from any fsspec URL, decoded once, kept in memory, cropped on the device.

A training set of photos is small next to the GPU's memory (76 photos decode to ~300 MB), so every
image is fetched and decoded once, in parallel threads (Pillow releases the GIL while decoding),
and kept as a uint8 ``(3, H, W)`` tensor on the training device. A batch is then B slices of those
tensors, random flips and one conversion to float: no loader processes, no host-to-device copies
per step, and the GPU never waits on the CPU.

Images whose shorter side is below half a crop are skipped (upscaling them would teach the codec
blur); those between half a crop and a crop are upscaled to the crop (as the release's
``ResizeIfSmall``); ``max_side`` optionally downsizes huge images, which also keeps memory bounded.
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from codec.errors import InputImageError
from pipeline.storage import Location, list_files, open_location, read_bytes

__all__ = ["IMAGE_SUFFIXES", "TrainImage", "list_image_urls", "decode_rgb", "load_images", "CropBank"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm")


@dataclass(frozen=True)
class TrainImage:
    """One decoded training image: where it came from and its pixels, ``(H, W, 3)`` uint8."""

    name: str
    pixels: np.ndarray


def list_image_urls(url: str, storage_options: dict | None = None) -> list[str]:
    """Every image below ``url`` (a folder or prefix, a glob, or one file), sorted, as full URLs."""
    location = open_location(url, storage_options)
    return [location.uri(p) for p in _image_paths(location)]


def _image_paths(location: Location) -> list[str]:
    fs, root = location.fs, location.root
    if any(c in root for c in "*?["):
        paths = sorted(fs.glob(root))
    elif fs.isfile(root):
        paths = [root]
    else:
        paths = list_files(fs, root)
    found = [p for p in paths if p.lower().endswith(IMAGE_SUFFIXES)]
    if not found:
        raise InputImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found at {location.url!r}")
    return found


def decode_rgb(data: bytes, name: str) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB, EXIF orientation applied, alpha dropped."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode not in ("RGB", "L", "RGBA", "P", "LA", "I;16", "I"):
                im = im.convert("RGB")
            if im.mode in ("I;16", "I"):
                im = Image.fromarray((np.asarray(im, dtype=np.float32) / 257.0).clip(0, 255).astype(np.uint8))
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputImageError(f"cannot decode training image {name}: {e}") from e


def _fit(pixels: np.ndarray, crop: int, max_side: int | None) -> np.ndarray | None:
    """Resize so that crop <= shorter side and longer side <= max_side; None when too small."""
    h, w = pixels.shape[:2]
    short, long = min(h, w), max(h, w)
    if short * 2 < crop:
        return None
    scale = 1.0
    if short < crop:
        scale = crop / short
    elif max_side is not None and long > max_side:
        scale = max(max_side / long, crop / short)
    if scale == 1.0:
        return pixels
    size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
    resample = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(pixels).resize(size, resample), dtype=np.uint8)


def load_images(
    url: str,
    crop: int,
    *,
    max_side: int | None = None,
    limit: int | None = None,
    workers: int = 16,
    storage_options: dict | None = None,
) -> list[TrainImage]:
    """Fetch and decode the images at ``url`` (in parallel), fitted for ``crop`` × ``crop`` crops."""
    location = open_location(url, storage_options)
    paths = _image_paths(location)[:limit]
    fs = location.fs

    def one(path: str) -> TrainImage | None:
        pixels = _fit(decode_rgb(read_bytes(fs, path), path), crop, max_side)
        return None if pixels is None else TrainImage(name=path.rsplit("/", 1)[-1], pixels=pixels)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        loaded = list(pool.map(one, paths))
    images = [im for im in loaded if im is not None]
    skipped = len(paths) - len(images)
    if skipped:
        log.warning("skipped %d of %d images with a side under %d px", skipped, len(paths), crop // 2)
    if not images:
        raise InputImageError(f"no image at {url!r} is at least {crop // 2} px on its shorter side")
    return images


class CropBank:
    """Images held as uint8 tensors on one device, served as random ``crop`` × ``crop`` batches.

    An image is drawn with probability ∝ √(H·W): large photos hold more distinct crops than small
    ones, yet a few wallpapers must not drown the rest. Each crop is flipped left-right and
    upside-down with probability ½ each (the release's augmentations).
    """

    def __init__(self, images: Sequence[TrainImage], device: torch.device | str = "cpu") -> None:
        if not images:
            raise InputImageError("CropBank needs at least one image")
        self.names = [im.name for im in images]
        self.device = torch.device(device)
        self.tensors = [
            torch.from_numpy(im.pixels).permute(2, 0, 1).contiguous().to(self.device) for im in images
        ]
        weights = [math.sqrt(t.shape[1] * t.shape[2]) for t in self.tensors]
        self._cumulative = np.cumsum(np.asarray(weights) / sum(weights))

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def min_side(self) -> int:
        return min(min(t.shape[1:]) for t in self.tensors)

    def split(self, held_out: int, seed: int = 0) -> tuple[CropBank, CropBank | None]:
        """(training bank, bank of ``held_out`` images kept out of training), chosen by ``seed``."""
        if held_out <= 0:
            return self, None
        if held_out >= len(self):
            raise ValueError(f"cannot hold out {held_out} of {len(self)} images")
        order = random.Random(seed).sample(range(len(self)), len(self))
        return self._subset(sorted(order[held_out:])), self._subset(sorted(order[:held_out]))

    def _subset(self, indexes: list[int]) -> CropBank:
        sub = CropBank.__new__(CropBank)
        sub.names = [self.names[i] for i in indexes]
        sub.device = self.device
        sub.tensors = [self.tensors[i] for i in indexes]
        weights = [math.sqrt(t.shape[1] * t.shape[2]) for t in sub.tensors]
        sub._cumulative = np.cumsum(np.asarray(weights) / sum(weights))
        return sub

    def sample(
        self, batch: int, crop: int, rng: np.random.Generator, augment: bool = True, min_scale: float = 1.0
    ) -> torch.Tensor:
        """A batch of crops in [-1, 1], float32.  # (B, 3, crop, crop)

        ``min_scale < 1`` (with ``augment``): each crop is cut from the photo downscaled by a factor s
        drawn log-uniformly from [min_scale, 1] (a window of crop/s pixels, area-resized to crop), so
        that a few high-resolution photos also yield whole objects and scenes, not only close-ups."""
        if crop > self.min_side:
            raise ValueError(f"crop {crop} exceeds the smallest image side {self.min_side}")
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        picks = np.searchsorted(self._cumulative, rng.random(batch), side="right").clip(0, len(self) - 1)
        scaled = augment and min_scale < 1
        scales = np.exp(rng.uniform(math.log(min_scale), 0.0, batch)) if scaled else np.ones(batch)
        crops = []
        for i, scale in zip(picks, scales, strict=True):
            t = self.tensors[int(i)]
            side = min(int(round(crop / scale)), t.shape[1], t.shape[2])
            top = int(rng.integers(0, t.shape[1] - side + 1))
            left = int(rng.integers(0, t.shape[2] - side + 1))
            window = t[:, top : top + side, left : left + side]
            if side != crop:
                window = torch.nn.functional.interpolate(
                    window[None].float(), size=(crop, crop), mode="area"
                )[0].round_().clamp_(0, 255).to(torch.uint8)
            crops.append(window)
        x = torch.stack(crops)  # (B, 3, crop, crop) uint8
        if augment:
            flips = torch.from_numpy(rng.random((2, batch)) < 0.5).to(self.device).view(2, batch, 1, 1, 1)
            x = torch.where(flips[0], x.flip(-1), x)
            x = torch.where(flips[1], x.flip(-2), x)
        return x.float().div_(127.5).sub_(1.0)

    def center_crops(self, crop: int) -> torch.Tensor:
        """One centred crop per image, no augmentation: a fixed evaluation batch.  # (N, 3, crop, crop)"""
        out = []
        for t in self.tensors:
            top, left = (t.shape[1] - crop) // 2, (t.shape[2] - crop) // 2
            out.append(t[:, top : top + crop, left : left + crop])
        return torch.stack(out).float().div_(127.5).sub_(1.0)
