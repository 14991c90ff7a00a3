"""Reading ``.dticv`` containers: the other half of ``pipeline/dticv.py``, which owns the layout.

Parsing checks every magic, version, size and CRC32 before trusting a field; a ``DticvReader``
fetches the footer, index and header with ranged reads, then only the bytes asked for.
A CRC proves integrity, not honesty: a hostile file can carry correct CRCs, so the frame size is
bounded (``MAX_FRAME_PIXELS``) and every index entry must lie inside the file's data region
before any range is read. Byte layout: ``docs/FORMAT.md``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from fractions import Fraction

from codec.errors import (
    ChecksumError,
    FormatError,
    LimitExceededError,
    TruncatedPayloadError,
    UnsupportedVersionError,
)
from pipeline.dticv import (
    _FIXED,
    _FOOTER,
    _FRAME,
    _PACKET,
    _PREAMBLE,
    _STREAM_FIXED,
    END_MAGIC,
    FOOTER_SIZE,
    INDEX_MAGIC,
    MAGIC,
    MAX_ENTRIES,
    MAX_HEADER,
    PACKET_KEY,
    VERSION,
    CarriedPacket,
    CarriedStream,
    DticvIndex,
    FrameEntry,
    PacketEntry,
    VideoHeader,
)

__all__ = [
    "MAX_FRAME_PIXELS",
    "DticvReader",
    "open_container",
    "parse_header",
    "parse_footer",
    "parse_index",
    "decode_packet",
]

MAX_FRAME_PIXELS = 1 << 26  # 64 Mpx (8k x 8k), the image pipeline's limit: one RGB frame is 192 MiB


class _Cursor:
    """Reads fields off a bytes object; a short read is a TruncatedPayloadError naming the field."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int, name: str) -> bytes:
        if self.pos + n > len(self.data):
            raise TruncatedPayloadError(f"{self.what} ends inside {name}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct, name: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, name))

    def string(self, name: str) -> str:
        (n,) = struct.unpack("<H", self.take(2, name))
        return self.take(n, name).decode("utf-8", errors="replace")

    def blob(self, name: str) -> bytes:
        (n,) = struct.unpack("<I", self.take(4, name))
        return self.take(n, name)


def _fraction(num: int, den: int, name: str) -> Fraction:
    if den == 0:
        raise FormatError(f"{name} has a zero denominator")
    return Fraction(num, den)


def _decode_stream(record: bytes) -> CarriedStream:
    c = _Cursor(record, "stream record")
    src, kind, tbn, tbd, rate, channels, frame_size, bit_rate = c.unpack(_STREAM_FIXED, "stream")
    if kind not in (1, 2):
        raise FormatError(f"carried stream kind {kind} is unknown (1 audio, 2 subtitle)")
    codec_name, layout, sample_format, language = (c.string(n) for n in ("codec", "layout", "fmt", "lang"))
    return CarriedStream(
        kind="audio" if kind == 1 else "subtitle", codec_name=codec_name,
        time_base=_fraction(tbn, tbd, "stream time base"), extradata=c.blob("extradata"),
        source_index=src, sample_rate=rate, channels=channels, layout=layout,
        sample_format=sample_format, frame_size=frame_size, bit_rate=bit_rate, language=language,
    )


def parse_header(data: bytes) -> tuple[VideoHeader, int]:
    """Parse the preamble and header from the start of a file; returns (header, its size)."""
    if len(data) < _PREAMBLE.size:
        raise TruncatedPayloadError(f".dticv file of {len(data)} bytes is shorter than its preamble")
    magic, version, _flags, size = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"not a .dticv container (magic {magic!r})")
    if version != VERSION:
        raise UnsupportedVersionError(f".dticv format version {version}; this code reads {VERSION}")
    if not 4 <= size <= MAX_HEADER:
        raise LimitExceededError(f".dticv header of {size} bytes (limit {MAX_HEADER})")
    end = _PREAMBLE.size + size
    if len(data) < end:
        raise TruncatedPayloadError(f".dticv header needs {end} bytes, have {len(data)}")
    (crc,) = struct.unpack_from("<I", data, end - 4)
    if zlib.crc32(data[: end - 4]) != crc:
        raise ChecksumError(".dticv header CRC32 mismatch")
    c = _Cursor(data[_PREAMBLE.size : end - 4], ".dticv header")
    f = c.unpack(_FIXED, "fixed fields")
    pixel_format, source_codec, source_name = (c.string(n) for n in ("pix fmt", "codec", "name"))
    (count,) = struct.unpack("<H", c.take(2, "stream count"))
    streams = tuple(_decode_stream(c.blob("stream record")) for _ in range(count))
    header = VideoHeader(
        model_id=f[0].hex(), quality=f[1], width=f[2], height=f[3],
        time_base=_fraction(f[4], f[5], "time base"), frame_rate=Fraction(f[6], f[7]) if f[7] else None,
        color_primaries=f[8], color_transfer=f[9], color_matrix=f[10], color_range=f[11],
        rotation=f[12], bit_depth=f[13], duration=f[14], pixel_format=pixel_format,
        source_codec=source_codec, source_name=source_name, streams=streams,
    )
    _check_frame_size(header.width, header.height)
    return header, end


def _check_frame_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise FormatError(f".dticv frame size {width}x{height} is empty")
    if width * height > MAX_FRAME_PIXELS:
        raise LimitExceededError(
            f".dticv frame size {width}x{height} exceeds the limit of {MAX_FRAME_PIXELS} pixels"
        )


def parse_footer(data: bytes, file_size: int) -> tuple[int, int]:
    """Return (index offset, index size) from the last FOOTER_SIZE bytes of a file."""
    if len(data) != FOOTER_SIZE:
        raise TruncatedPayloadError(f".dticv file of {file_size} bytes has no complete footer")
    offset, size, _count, crc, end = _FOOTER.unpack(data)
    if end != END_MAGIC:
        raise TruncatedPayloadError(".dticv footer missing: the file is truncated or still being written")
    if zlib.crc32(data[:20]) != crc:
        raise ChecksumError(".dticv footer CRC32 mismatch")
    if offset + size + FOOTER_SIZE != file_size:
        raise FormatError(f".dticv footer points at {offset}+{size}, file has {file_size} bytes")
    return offset, size


def parse_index(data: bytes, data_start: int = 0, data_end: int | None = None) -> DticvIndex:
    """The index; with ``data_start``/``data_end`` (the bytes between header and index), every
    entry must point inside that region: a lying offset or size is refused here, not read."""
    if len(data) < 12 or data[:4] != INDEX_MAGIC:
        raise FormatError(".dticv index does not start with its magic")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise ChecksumError(".dticv index CRC32 mismatch")
    c = _Cursor(data[4:-4], ".dticv index")
    frames = tuple(FrameEntry(*c.unpack(_FRAME, "frame entry")) for _ in range(_count(c, _FRAME)))
    packets = tuple(PacketEntry(*c.unpack(_PACKET, "packet entry")) for _ in range(_count(c, _PACKET)))
    if data_end is not None:
        for kind, entries in (("frame", frames), ("packet", packets)):
            for i, e in enumerate(entries):
                if e.offset < data_start or e.offset + e.size > data_end:
                    raise FormatError(f".dticv {kind} {i} claims bytes [{e.offset}, {e.offset + e.size}) "
                                      f"outside the data region [{data_start}, {data_end})")  # fmt: skip
    return DticvIndex(frames=frames, packets=packets)


def _count(c: _Cursor, entry: struct.Struct) -> int:
    (n,) = struct.unpack("<I", c.take(4, "entry count"))
    if n > MAX_ENTRIES:
        raise LimitExceededError(f".dticv index claims {n} entries (limit {MAX_ENTRIES})")
    if n * entry.size > len(c.data) - c.pos:
        raise TruncatedPayloadError(f".dticv index claims {n} entries but holds {len(c.data) - c.pos} bytes")
    return n


def _checked(data: bytes, entry: FrameEntry | PacketEntry, what: str) -> bytes:
    if len(data) != entry.size:
        raise TruncatedPayloadError(f"{what} at offset {entry.offset} is cut short")
    if zlib.crc32(data) != entry.crc:
        raise ChecksumError(f"{what} at offset {entry.offset}: CRC32 mismatch")
    return data


def decode_packet(data: bytes, entry: PacketEntry) -> CarriedPacket:
    c = _Cursor(data, "carried packet")
    (n,) = struct.unpack("<H", c.take(2, "side data count"))
    side = tuple((c.string("side data type"), c.blob("side data")) for _ in range(n))
    return CarriedPacket(
        stream=entry.stream, pts=entry.pts, dts=entry.dts, duration=entry.duration,
        keyframe=bool(entry.flags & PACKET_KEY), data=c.data[c.pos :], side_data=side,
    )


ReadRange = Callable[[int, int], bytes]  # (start, end) -> bytes [start, end)


class DticvReader:
    """Random access to a container through ranged reads: footer, index and header first,
    then only the bytes of the frames and packets asked for."""

    HEAD_GUESS = 64 * 1024

    def __init__(self, read_range: ReadRange, size: int) -> None:
        self._read, self.size = read_range, size
        if size < _PREAMBLE.size + FOOTER_SIZE:
            raise TruncatedPayloadError(f".dticv file of {size} bytes is too short")
        offset, index_size = parse_footer(read_range(size - FOOTER_SIZE, size), size)
        head = read_range(0, min(self.HEAD_GUESS, offset))
        if len(head) >= _PREAMBLE.size:
            needed = _PREAMBLE.size + _PREAMBLE.unpack_from(head)[3]
            if _PREAMBLE.unpack_from(head)[0] == MAGIC and len(head) < needed <= offset:
                head = read_range(0, needed)
        self.header, self.header_size = parse_header(head)
        self.index = parse_index(read_range(offset, offset + index_size), self.header_size, offset)

    @classmethod
    def from_bytes(cls, data: bytes) -> DticvReader:
        return cls(lambda a, b: data[a:b], len(data))

    @property
    def frame_count(self) -> int:
        return len(self.index.frames)

    def read_frames(self, start: int = 0, stop: int | None = None) -> list[bytes | None]:
        """Payloads of frames [start, stop) with one ranged read; None where a frame is missing."""
        entries = self.index.frames[start:stop]
        if not entries:
            return []
        lo, hi = entries[0].offset, entries[-1].offset + entries[-1].size
        blob = self._read(lo, hi)
        return [
            None if e.missing else _checked(blob[e.offset - lo : e.offset - lo + e.size], e, "frame")
            for e in entries
        ]

    def read_packets(self, entries: list[PacketEntry]) -> list[CarriedPacket]:
        """The carried packets of ``entries`` (in file order), with one ranged read."""
        if not entries:
            return []
        lo = min(e.offset for e in entries)
        hi = max(e.offset + e.size for e in entries)
        blob = self._read(lo, hi)
        out = []
        for e in entries:
            data = _checked(blob[e.offset - lo : e.offset - lo + e.size], e, "carried packet")
            out.append(decode_packet(data, e))
        return out


def open_container(url: str, storage_options: dict | None = None) -> DticvReader:
    """A reader over any fsspec URL; every read is a ranged read (with retries)."""
    from pipeline.storage import open_location, read_bytes

    location = open_location(url, storage_options)
    fs, path = location.fs, location.root
    return DticvReader(lambda a, b: read_bytes(fs, path, a, b), fs.size(path))
