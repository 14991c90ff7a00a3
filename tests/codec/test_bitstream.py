"""Container format v1: exact layout, round trips, and a clear error for every kind of bad payload."""

from __future__ import annotations

import hashlib
import zlib

import pytest

from codec import bitstream
from codec.bitstream import ALPHA, EXIF, ICC, Header, pack, read_header, unpack
from codec.errors import (
    ChecksumError,
    FormatError,
    LimitExceededError,
    TruncatedPayloadError,
    UnsupportedVersionError,
)

MODEL_ID = "0123456789abcdef"

# The worked example of docs/FORMAT.md; change it only together with the document (and the version).
EXAMPLE_HEX = (
    "44 54 49 43 01 01 23 45 67 89 ab cd ef 02 00 00 08 80 06 80 04 00 00 02 04 08 00 01 02 03 04"
    " 00 01 02 03 04 05 06 07 ac 49 0d 0f"
)


def example() -> tuple[Header, list[bytes]]:
    header = Header(model_id=MODEL_ID, width=768, height=512, quality=2)
    return header, [b"\x01\x02\x03\x04", bytes(range(8))]


def rich() -> tuple[Header, list[bytes], dict[str, bytes]]:
    header = Header(
        MODEL_ID, 1001, 37, 3, mode="LA", source_mode="I;16", bit_depth=16, pad_right=23, pad_bottom=27
    )
    strings = [bytes(range(256)) * 3, b"", b"\xff" * 200]
    metadata = {ICC: b"icc-profile" * 20, EXIF: b"Exif\0\0MM", ALPHA: zlib.compress(b"\x80" * 1001 * 37)}
    return header, strings, metadata


def test_worked_example_is_byte_exact() -> None:
    header, strings = example()
    data = pack(header, strings)
    assert data == bytes.fromhex(EXAMPLE_HEX)
    assert unpack(data) == (header, strings, {})


def test_rich_payload_round_trips() -> None:
    header, strings, metadata = rich()
    data = pack(header, strings, metadata)
    assert unpack(data) == (header, strings, metadata)
    assert read_header(data) == header
    assert (header.coded_width, header.coded_height, header.has_alpha) == (1024, 64, True)
    assert hashlib.sha256(data).hexdigest()[:16] == hashlib.sha256(pack(*rich())).hexdigest()[:16]


def test_read_header_needs_only_the_header_bytes() -> None:
    header, strings, metadata = rich()
    data = pack(header, strings, metadata)
    header_size = len(data) - 4 - sum(map(len, strings)) - sum(map(len, metadata.values()))
    assert read_header(data[:header_size]) == header
    with pytest.raises(TruncatedPayloadError, match="chunk"):
        read_header(data[: header_size - 1])


def test_every_truncation_names_what_was_cut() -> None:
    data = pack(*rich())
    for cut in range(len(data)):
        with pytest.raises(TruncatedPayloadError, match="payload truncated in "):
            unpack(data[:cut])
    with pytest.raises(TruncatedPayloadError, match="string 0 of 3"):
        unpack(data[:60])
    with pytest.raises(TruncatedPayloadError, match="checksum"):
        unpack(data[:-2])


def test_corruption_is_a_checksum_error() -> None:
    data = bytearray(pack(*rich()))
    data[-300] ^= 0x10
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        unpack(bytes(data))
    with pytest.raises(FormatError, match="after the checksum"):
        unpack(pack(*rich()) + b"\0")


def test_bad_magic_and_unknown_version() -> None:
    data = pack(*example())
    with pytest.raises(FormatError, match="not a DiT-IC payload"):
        unpack(b"\x89PNG" + data[4:])
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        read_header(data[:4] + b"\x02" + data[5:])
    with pytest.raises(TruncatedPayloadError, match="magic"):
        unpack(b"")
    with pytest.raises(FormatError, match="not a DiT-IC payload"):
        read_header(b"GIF89a")


def test_limits() -> None:
    header = Header(MODEL_ID, 5000, 4000, 1)
    data = pack(header, [b"x"])
    assert unpack(data, max_pixels=20_000_000)[0] == header
    with pytest.raises(LimitExceededError, match="5000x4000 exceeds the limit of 1000000 pixels"):
        unpack(data, max_pixels=1_000_000)
    fixed = data[: bitstream._FIXED_SIZE]
    huge_count = fixed + bytes([1, 1, 0, 0]) + b"\xff\xff\xff\xff\x0f"
    with pytest.raises(LimitExceededError, match="strings"):
        read_header(huge_count)
    lying = fixed + bytes([1, 1, 0, 0, 1]) + b"\xff\xff\xff\xff\x0f" + b"\x00" + b"tiny"
    with pytest.raises(TruncatedPayloadError, match="string 0 of 1"):
        unpack(lying)
    with pytest.raises(FormatError, match="varint"):
        read_header(fixed + b"\xff" * 6)


def test_pack_rejects_bad_arguments() -> None:
    header, strings = example()
    with pytest.raises(ValueError, match="model_id"):
        Header("XYZ", 1, 1, 1)
    with pytest.raises(ValueError, match="width"):
        Header(MODEL_ID, 0, 1, 1)
    with pytest.raises(ValueError, match="mode"):
        Header(MODEL_ID, 1, 1, 1, mode="CMYK")
    with pytest.raises(ValueError, match="ALPH"):
        pack(Header(MODEL_ID, 1, 1, 1, mode="RGBA"), strings)
    with pytest.raises(ValueError, match="ALPH"):
        pack(header, strings, {ALPHA: b""})
    with pytest.raises(ValueError, match="tags"):
        pack(header, strings, {"toolong": b""})
    with pytest.raises(TypeError):
        pack(header, ["text"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        unpack("text")  # type: ignore[arg-type]


def test_header_to_dict_is_plain() -> None:
    header, *_ = rich()
    d = header.to_dict()
    assert d["mode"] == "LA" and d["width"] == 1001 and d["model_id"] == MODEL_ID
    assert Header(**d) == header
