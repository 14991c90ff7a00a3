"""A bad-input corpus, generated: every kind of object a bulk job meets that is not a clean RGB JPEG.

``build_corpus(folder, photo)`` writes the files and returns ``{key: expected}``, where expected
is ``"ok"`` or a fragment of the error message the manifest row must carry.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims ``width``×``height``: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _rotated_jpeg(photo: Path) -> bytes:
    """A photo stored sideways with EXIF orientation 6 (display rotated 90° clockwise)."""
    image = Image.open(photo).convert("RGB").resize((96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encoded(image, "JPEG", quality=90, exif=exif.tobytes())


def build_corpus(folder: Path, photo: Path) -> dict[str, str]:
    """Write the corpus into ``folder``; return ``{key: "ok" | expected error fragment}``."""
    good = Image.open(photo).convert("RGB").resize((80, 72))
    good_jpeg = _encoded(good, "JPEG", quality=90)
    rng = np.random.default_rng(7)
    files = {
        "good/plain.jpg": (good_jpeg, "ok"),
        "good/exif_rotated.jpg": (_rotated_jpeg(photo), "ok"),
        "good/cmyk.jpg": (_encoded(good.convert("CMYK"), "JPEG", quality=90), "ok"),
        "good/sixteen_bit.png": (
            _encoded(Image.fromarray(rng.integers(0, 65535, (40, 56), dtype=np.uint16)), "PNG"),
            "ok",
        ),
        "good/alpha.png": (_encoded(good.convert("RGBA"), "PNG"), "ok"),
        "good/grey.png": (_encoded(good.convert("L"), "PNG"), "ok"),
        "bad/empty.jpg": (b"", "empty"),
        "bad/truncated.jpg": (good_jpeg[: len(good_jpeg) // 3], "InputImageError"),
        "bad/not_an_image.jpg": (b"this is a text file, not a JPEG\n" * 20, "InputImageError"),
        "bad/bomb.png": (_png_claiming(40000, 40000), "pixels"),
        "bad/huge_dimension.png": (_png_claiming(200000, 400), "pixels"),
    }
    for key, (data, _) in files.items():
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {key: expected for key, (_, expected) in files.items()}
