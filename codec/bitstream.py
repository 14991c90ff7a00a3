"""Container format v1 of one compressed image (``.dtic``): the only place that knows byte layouts.

Layout (``docs/FORMAT.md`` specifies every byte): a fixed prefix (magic, version, model id, quality,
modes, bit depth), LEB128 varints for sizes, the length of each entropy-coded string and each
metadata chunk, then the strings, the chunk data, and a CRC32 over everything before it.

``unpack`` checks everything and raises only ``FormatError`` subclasses (never ``IndexError``,
``struct.error`` or ``MemoryError``): it compares every claimed length with the bytes present before
slicing, so it never allocates more than the input's size. ``read_header`` parses the header
alone, from a payload or from any prefix of one that holds the header (a ranged read), without the
checksum, which covers the whole payload.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass

from codec.errors import (
    ChecksumError,
    FormatError,
    LimitExceededError,
    TruncatedPayloadError,
    UnsupportedVersionError,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "DEFAULT_MAX_PIXELS",
    "MODES",
    "SOURCE_MODES",
    "ICC",
    "EXIF",
    "XMP",
    "ALPHA",
    "Header",
    "pack",
    "unpack",
    "read_header",
]

MAGIC = b"DTIC"
FORMAT_VERSION = 1
DEFAULT_MAX_PIXELS = 1 << 28  # 268 Mpx: a 16k x 16k image
MAX_PADDING = 4096
MAX_STRINGS = 1024
MAX_CHUNKS = 64
MODES = ("RGB", "L", "RGBA", "LA")  # what decoding returns; alpha modes carry an ALPH chunk
SOURCE_MODES = (
    "RGB", "L", "RGBA", "LA", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV", "I", "F",
    "I;16", "I;16B", "I;16L", "I;16N", "RGBX", "RGBa", "La",
)  # fmt: skip
ICC, EXIF, XMP, ALPHA = "ICCP", "EXIF", "XMP ", "ALPH"  # metadata chunk tags
_FIXED_SIZE = 17  # magic 4, version 1, model id 8, quality 1, mode 1, source mode 1, bit depth 1
_TAG = re.compile(r"[ -~]{4}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_FIELD_RANGES = {
    "width": (1, 2**32 - 1),
    "height": (1, 2**32 - 1),
    "quality": (0, 255),
    "bit_depth": (1, 32),
    "pad_right": (0, MAX_PADDING),
    "pad_bottom": (0, MAX_PADDING),
    "version": (0, 255),
}


@dataclass(frozen=True)
class Header:
    """What a payload says about its image; ``pack`` writes it, ``unpack``/``read_header`` return it.

    ``mode`` is the mode decoding returns (RGB, L, RGBA, LA; alpha modes carry the alpha plane in an
    ``ALPH`` chunk). ``source_mode``/``bit_depth`` record the input before the image policy converted
    it. ``pad_right``/``pad_bottom`` are the pixels the model coded beyond the image.
    """

    model_id: str
    width: int
    height: int
    quality: int
    mode: str = "RGB"
    source_mode: str = "RGB"
    bit_depth: int = 8
    pad_right: int = 0
    pad_bottom: int = 0
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not _HEX16.fullmatch(self.model_id):
            raise ValueError(f"model_id must be 16 lowercase hex characters, got {self.model_id!r}")
        for name, (low, high) in _FIELD_RANGES.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.source_mode not in SOURCE_MODES:
            raise ValueError(f"source_mode must be one of {SOURCE_MODES}, got {self.source_mode!r}")

    @property
    def coded_width(self) -> int:
        return self.width + self.pad_right

    @property
    def coded_height(self) -> int:
        return self.height + self.pad_bottom

    @property
    def has_alpha(self) -> bool:
        return self.mode in ("RGBA", "LA")

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- writing


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value < 2**32:
        raise ValueError(f"{what} of {value} bytes does not fit the format (at most 4 GiB)")
    return _varint(value)


def _header_bytes(header: Header, strings: list[bytes], metadata: dict[str, bytes]) -> bytes:
    if header.version != FORMAT_VERSION:
        raise ValueError(f"this code writes format version {FORMAT_VERSION}, not {header.version}")
    out = bytearray(MAGIC)
    out += bytes([header.version]) + bytes.fromhex(header.model_id)
    out += bytes([header.quality, MODES.index(header.mode), SOURCE_MODES.index(header.source_mode)])
    out += bytes([header.bit_depth])
    for value in (header.width, header.height, header.pad_right, header.pad_bottom, len(strings)):
        out += _varint(value)
    out += b"".join(_u32(len(s), f"string {i}") for i, s in enumerate(strings))
    out += _varint(len(metadata))
    for tag, data in metadata.items():
        out += tag.encode("ascii") + _u32(len(data), f"chunk {tag!r}")
    return bytes(out)


def _check_pack_args(header: Header, strings: list[bytes], metadata: dict[str, bytes]) -> None:
    if not isinstance(header, Header):
        raise TypeError(f"header must be a Header, got {type(header).__name__}")
    if len(strings) > MAX_STRINGS or len(metadata) > MAX_CHUNKS:
        raise ValueError(
            f"at most {MAX_STRINGS} strings and {MAX_CHUNKS} chunks, got {len(strings)}/{len(metadata)}"
        )
    for item in [*strings, *metadata.values()]:
        if not isinstance(item, bytes | bytearray | memoryview):
            raise TypeError(f"strings and metadata values must be bytes, got {type(item).__name__}")
    for tag in metadata:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise ValueError(f"metadata tags must be 4 printable ASCII characters, got {tag!r}")
    if header.has_alpha != (ALPHA in metadata):
        raise ValueError(f"mode {header.mode} needs {'an' if header.has_alpha else 'no'} {ALPHA!r} chunk")


def pack(header: Header, strings: list[bytes], metadata: dict[str, bytes] | None = None) -> bytes:
    """The payload of one image: ``header``, its entropy-coded ``strings``, optional metadata chunks."""
    metadata = dict(metadata or {})
    strings = list(strings)
    _check_pack_args(header, strings, metadata)
    body = b"".join(bytes(s) for s in strings) + b"".join(bytes(d) for d in metadata.values())
    data = _header_bytes(header, strings, metadata) + body
    return data + zlib.crc32(data).to_bytes(4, "little")


# ----------------------------------------------------------------------------- reading


class _Cursor:
    """Reads fields off a buffer; every read past the end names the field it wanted."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            left = len(self.data) - self.pos
            raise TruncatedPayloadError(
                f"payload truncated in {what}: needs {n} bytes at offset {self.pos}, {left} left"
            )
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def varint(self, what: str) -> int:
        value = 0
        for i in range(5):
            (byte,) = self.take(1, what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if value >= 2**32:
                    break
                return value
        raise FormatError(f"bad varint in {what} at offset {self.pos}: more than 32 bits")


def _as_bytes(data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, got {type(data).__name__}")
    return bytes(data)


def _read_fixed(cur: _Cursor) -> dict:
    head = cur.data[: len(MAGIC)]
    if not MAGIC.startswith(head):  # a short prefix of the magic is a truncation, anything else is not ours
        raise FormatError(f"not a DiT-IC payload: it starts with {head!r}, expected {MAGIC!r}")
    cur.take(len(MAGIC), "magic")
    (version,) = cur.take(1, "version")
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"payload format version {version} is not supported (this code reads 1)"
        )
    model_id = cur.take(8, "model id").hex()
    quality, mode, source_mode, bit_depth = cur.take(4, "modes")
    if mode >= len(MODES) or source_mode >= len(SOURCE_MODES) or not 1 <= bit_depth <= 32:
        raise FormatError(f"bad mode fields: mode {mode}, source mode {source_mode}, bit depth {bit_depth}")
    return dict(model_id=model_id, quality=quality, mode=MODES[mode], source_mode=SOURCE_MODES[source_mode],
                bit_depth=bit_depth, version=version)  # fmt: skip


def _read_header(cur: _Cursor, max_pixels: int) -> tuple[Header, list[int], list[tuple[str, int]]]:
    fields = _read_fixed(cur)
    width, height = cur.varint("width"), cur.varint("height")
    pad_right, pad_bottom = cur.varint("pad_right"), cur.varint("pad_bottom")
    if width < 1 or height < 1:
        raise FormatError(f"bad image size {width}x{height}")
    if width * height > max_pixels:
        raise LimitExceededError(f"image of {width}x{height} exceeds the limit of {max_pixels} pixels")
    if max(pad_right, pad_bottom) > MAX_PADDING:
        raise LimitExceededError(f"padding {pad_right}x{pad_bottom} exceeds {MAX_PADDING} pixels")
    n_strings = cur.varint("string count")
    if n_strings > MAX_STRINGS:
        raise LimitExceededError(f"{n_strings} strings exceed the limit of {MAX_STRINGS}")
    lengths = [cur.varint(f"length of string {i}") for i in range(n_strings)]
    n_chunks = cur.varint("chunk count")
    if n_chunks > MAX_CHUNKS:
        raise LimitExceededError(f"{n_chunks} metadata chunks exceed the limit of {MAX_CHUNKS}")
    chunks = []
    for i in range(n_chunks):
        tag = cur.take(4, f"tag of chunk {i}").decode("latin-1")
        if not _TAG.fullmatch(tag) or tag in dict(chunks):
            raise FormatError(f"bad or repeated metadata chunk tag {tag!r}")
        chunks.append((tag, cur.varint(f"length of chunk {tag!r}")))
    header = Header(width=width, height=height, pad_right=pad_right, pad_bottom=pad_bottom, **fields)
    if header.has_alpha != (ALPHA in dict(chunks)):
        raise FormatError(f"mode {header.mode} and the presence of an {ALPHA!r} chunk disagree")
    return header, lengths, chunks


def read_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """The header alone (no checksum check), from a payload or a prefix of one holding the header."""
    return _read_header(_Cursor(_as_bytes(data)), max_pixels)[0]


def unpack(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Header, list[bytes], dict[str, bytes]]:
    """``(header, strings, metadata)`` of a payload, every length and the CRC32 checked."""
    cur = _Cursor(_as_bytes(data))
    header, lengths, chunks = _read_header(cur, max_pixels)
    strings = [cur.take(n, f"string {i} of {len(lengths)}") for i, n in enumerate(lengths)]
    metadata = {tag: cur.take(n, f"metadata chunk {tag!r}") for tag, n in chunks}
    end = cur.pos
    stored = int.from_bytes(cur.take(4, "checksum"), "little")
    if cur.pos != len(cur.data):
        raise FormatError(f"{len(cur.data) - cur.pos} bytes of unexpected data after the checksum")
    if zlib.crc32(cur.data[:end]) != stored:
        raise ChecksumError(
            f"payload checksum mismatch: stored {stored:08x}, computed {zlib.crc32(cur.data[:end]):08x}"
        )
    return header, strings, metadata
