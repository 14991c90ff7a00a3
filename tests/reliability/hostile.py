"""Hostile inputs, forged the way an attacker would: valid CRCs around lying fields.

Images (``hostile_images``) add to the pipeline tests' bad-input corpus (``tests/pipeline/corpus.py``);
payloads (``hostile_payloads``) and ``.dticv`` containers (``hostile_containers``) start from real
ones made by the tiny codec and lie about lengths, sizes, versions and models.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from codec import bitstream
from pipeline.dticv import FOOTER_SIZE, VideoHeader, pack_dticv


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _with_crc(data: bytes) -> bytes:
    return data + zlib.crc32(data).to_bytes(4, "little")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _tiff_entry(tag: int, kind: int, count: int, value: int) -> bytes:
    return struct.pack("<HHII", tag, kind, count, value)


def lying_exif() -> bytes:
    """An EXIF block whose entries claim a billion values and point far outside the block."""
    entries = [_tiff_entry(0x0112, 3, 1, 6), _tiff_entry(0x010E, 2, 0x3FFFFFFF, 0x7FFFFF00),
               _tiff_entry(0x8769, 4, 1, 0xFFFFFF00)]  # fmt: skip
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, len(entries)) + b"".join(entries) + bytes(4)


def hostile_images(folder: Path, photo: Path) -> dict[str, str]:
    """Write images beyond the corpus: huge or lying EXIF, a JPEG whose frame header claims 65000².
    Returns ``{file name: "ok" | "error" | "either"}``."""
    folder.mkdir(parents=True, exist_ok=True)
    small = Image.open(photo).convert("RGB").resize((72, 64))
    buffer = io.BytesIO()
    small.save(buffer, "PNG")
    png = buffer.getvalue()
    huge = np.random.default_rng(3).integers(0, 256, 16 * 1024 * 1024, dtype=np.uint8).tobytes()
    (folder / "huge_exif.png").write_bytes(png[:-12] + _png_chunk(b"eXIf", b"MM\x00*" + huge) + png[-12:])
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=90, exif=lying_exif())
    (folder / "lying_exif.jpg").write_bytes(buffer.getvalue())
    jpeg = bytearray(buffer.getvalue())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    (folder / "jpeg_bomb.jpg").write_bytes(bytes(jpeg))
    return {"huge_exif.png": "either", "lying_exif.jpg": "either", "jpeg_bomb.jpg": "error"}


def hostile_payloads(valid: bytes, other_size: bytes) -> dict[str, bytes]:
    """Forged ``.dtic`` payloads from a valid one (``other_size``: a valid payload of another size)."""
    header, strings, metadata = bitstream.unpack(valid)
    fixed = valid[:17]
    sizes = b"".join(_varint(v) for v in (header.width, header.height, header.pad_right, header.pad_bottom))
    lying_string = fixed + sizes + _varint(2) + _varint(2**31) + _varint(8) + _varint(0) + bytes(16)
    lying_chunk = fixed + sizes + _varint(0) + _varint(1) + b"EXIF" + _varint(2**32 - 1) + bytes(16)
    bigger = dataclasses.replace(header, width=4000, height=4000, pad_right=32, pad_bottom=32)
    over_limit = dataclasses.replace(header, width=2**20, height=2**20, pad_right=0, pad_bottom=0)
    flipped = bytearray(valid)
    flipped[len(valid) // 2] ^= 0x10
    return {
        "empty.dtic": b"",
        "truncated.dtic": valid[: len(valid) // 2],
        "wrong_magic.dtic": b"\x89PNG" + valid[4:],
        "future_version.dtic": valid[:4] + bytes([9]) + valid[5:],
        "lying_string_length.dtic": _with_crc(lying_string),
        "lying_chunk_length.dtic": _with_crc(lying_chunk),
        "lying_size.dtic": bitstream.pack(bigger, strings, metadata),
        "over_limit_size.dtic": bitstream.pack(over_limit, strings, metadata),
        "other_model.dtic": bitstream.pack(dataclasses.replace(header, model_id="00" * 8), strings, metadata),
        "bit_flip.dtic": bytes(flipped),
        "swapped_strings.dtic": bitstream.pack(header, strings[::-1], metadata),
        "other_size_strings.dtic": bitstream.pack(header, bitstream.unpack(other_size)[1], metadata),
    }


def video_header(model_id: str, quality: int, width: int = 64, height: int = 48) -> VideoHeader:
    return VideoHeader(width=width, height=height, time_base=Fraction(1, 25), frame_rate=Fraction(25),
                       model_id=model_id, quality=quality, duration=2, pixel_format="yuv420p")  # fmt: skip


def _frames(payloads: list[bytes]) -> list[tuple[int, int, bytes, bool]]:
    return [(i, 1, p, i == 0) for i, p in enumerate(payloads)]


def _lying_index(container: bytes) -> bytes:
    """``container`` with its first frame entry pointing 1 TiB away (index CRC recomputed)."""
    offset, size = struct.unpack_from("<QQ", container, len(container) - FOOTER_SIZE)
    index = bytearray(container[offset : offset + size])
    struct.pack_into("<Q", index, 8, 2**40)  # magic (4) + frame count (4), then entry 0's offset
    struct.pack_into("<I", index, len(index) - 4, zlib.crc32(bytes(index[:-4])))
    return container[:offset] + bytes(index) + container[offset + size :]


def hostile_containers(model_id: str, quality: int, frames: list[bytes], other: bytes) -> dict[str, bytes]:
    """``valid.dticv`` and forged containers; ``frames`` are 64x48 payloads, ``other`` is 128x96."""
    valid = pack_dticv(video_header(model_id, quality), _frames(frames))
    return {
        "valid.dticv": valid,
        "empty.dticv": b"",
        "truncated.dticv": valid[: len(valid) - 7],
        "wrong_magic.dticv": b"\x89PNGDTIC" + valid[8:],
        "lying_size.dticv": pack_dticv(video_header(model_id, quality, 60000, 60000), _frames(frames)),
        "zero_size.dticv": pack_dticv(video_header(model_id, quality, 0, 0), _frames(frames)),
        "lying_index.dticv": _lying_index(valid),
        "frame_of_other_size.dticv": pack_dticv(video_header(model_id, quality), _frames([frames[0], other])),
        "other_model.dticv": pack_dticv(video_header("00" * 8, quality), _frames(frames)),
    }
