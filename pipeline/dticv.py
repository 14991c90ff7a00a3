"""The ``.dticv`` video container: the only module that knows its byte layout.

One file per source video: a header (frame size, time base, colour, rotation, the parameters of
the audio and subtitle streams carried through), every frame's image payload (container v1, one
per frame, opaque here), the carried packets untouched, then an index of offsets and a fixed-size
footer that points at it. The index at the end lets a reader fetch any range of frames with three
ranged reads (footer, index, header) plus one for the frames. Byte layout: ``docs/FORMAT.md``.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

from codec.errors import (
    ChecksumError,
    FormatError,
    LimitExceededError,
    TruncatedPayloadError,
    UnsupportedVersionError,
)

__all__ = [
    "MAGIC",
    "VERSION",
    "NO_PTS",
    "FOOTER_SIZE",
    "VideoHeader",
    "CarriedStream",
    "CarriedPacket",
    "FrameEntry",
    "PacketEntry",
    "DticvIndex",
    "DticvReader",
    "write_dticv",
]

MAGIC = b"\x89DTICV\r\n"
END_MAGIC = b"DTICVEND"
INDEX_MAGIC = b"DIDX"
VERSION = 1
NO_PTS = -(2**63)  # a missing timestamp (FFmpeg's AV_NOPTS_VALUE)
FRAME_MISSING = 1  # FrameEntry.flags: the frame could not be decoded or coded; no payload
FRAME_KEY = 2  # FrameEntry.flags: the source frame was a keyframe
PACKET_KEY = 1

_PREAMBLE = struct.Struct("<8sHHI")  # magic, version, flags, header size
_FIXED = struct.Struct("<8sBIIIIIIBBBBhBq")  # model id .. duration, see FORMAT.md
_STREAM_FIXED = struct.Struct("<HBIIIHII")
_FRAME = struct.Struct("<QIIqqI")
_PACKET = struct.Struct("<QIIqqqBB")
_FOOTER = struct.Struct("<QQII8s")
FOOTER_SIZE = _FOOTER.size
MAX_HEADER = 1 << 20
MAX_ENTRIES = 50_000_000


@dataclass(frozen=True)
class CarriedStream:
    """An audio or subtitle stream of the source, described well enough to remux its packets."""

    kind: str  # "audio" | "subtitle"
    codec_name: str
    time_base: Fraction
    extradata: bytes = b""
    source_index: int = 0
    sample_rate: int = 0
    channels: int = 0
    layout: str = ""
    sample_format: str = ""
    frame_size: int = 0
    bit_rate: int = 0
    language: str = ""


@dataclass(frozen=True)
class CarriedPacket:
    """One packet of a carried stream, bytes as the demuxer gave them."""

    stream: int  # index into VideoHeader.streams
    pts: int
    dts: int
    duration: int
    keyframe: bool
    data: bytes
    side_data: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class VideoHeader:
    """What a player needs besides the frames. Colour codes follow ITU-T H.273 (as FFmpeg)."""

    width: int
    height: int
    time_base: Fraction
    frame_rate: Fraction | None
    model_id: str = "0" * 16
    quality: int = 0
    color_primaries: int = 2
    color_transfer: int = 2
    color_matrix: int = 2
    color_range: int = 0  # 0 unspecified, 1 limited (tv), 2 full (pc)
    rotation: int = 0  # degrees counter-clockwise, as PyAV's VideoFrame.rotation
    bit_depth: int = 8
    duration: int = 0  # of the video stream, in time_base units
    pixel_format: str = ""
    source_codec: str = ""
    source_name: str = ""
    streams: tuple[CarriedStream, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class FrameEntry:
    offset: int
    size: int
    crc: int
    pts: int
    duration: int
    flags: int

    @property
    def missing(self) -> bool:
        return bool(self.flags & FRAME_MISSING)


@dataclass(frozen=True)
class PacketEntry:
    offset: int
    size: int
    crc: int
    pts: int
    dts: int
    duration: int
    stream: int
    flags: int


@dataclass(frozen=True)
class DticvIndex:
    frames: tuple[FrameEntry, ...]
    packets: tuple[PacketEntry, ...]


# ---------------------------------------------------------------- encoding helpers


def _str(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise LimitExceededError(f"string field of {len(data)} bytes exceeds 65535")
    return struct.pack("<H", len(data)) + data


def _blob(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def _u32(value: int, name: str) -> int:
    if not 0 <= value < 2**32:
        raise FormatError(f"{name}={value} does not fit the container's 32-bit field")
    return value


def _model_bytes(model_id: str) -> bytes:
    try:
        raw = bytes.fromhex(model_id)
    except ValueError as e:
        raise FormatError(f"model id {model_id!r} is not 16 hex characters") from e
    if len(raw) != 8:
        raise FormatError(f"model id {model_id!r} is not 16 hex characters")
    return raw


def _encode_stream(s: CarriedStream) -> bytes:
    kind = {"audio": 1, "subtitle": 2}.get(s.kind)
    if kind is None:
        raise FormatError(f"carried stream kind {s.kind!r} is not 'audio' or 'subtitle'")
    tb = s.time_base
    fixed = _STREAM_FIXED.pack(
        s.source_index, kind, _u32(tb.numerator, "time base"), _u32(tb.denominator, "time base"),
        _u32(s.sample_rate, "sample rate"), s.channels, _u32(s.frame_size, "frame size"),
        _u32(min(s.bit_rate, 2**32 - 1), "bit rate"),
    )
    body = fixed + _str(s.codec_name) + _str(s.layout) + _str(s.sample_format) + _str(s.language)
    return _blob(body + _blob(s.extradata))


def _encode_header(h: VideoHeader) -> bytes:
    rate = h.frame_rate or Fraction(0, 1)
    fixed = _FIXED.pack(
        _model_bytes(h.model_id), h.quality, _u32(h.width, "width"), _u32(h.height, "height"),
        _u32(h.time_base.numerator, "time base"), _u32(h.time_base.denominator, "time base"),
        _u32(rate.numerator, "frame rate"), _u32(rate.denominator if rate else 0, "frame rate"),
        h.color_primaries, h.color_transfer, h.color_matrix, h.color_range, h.rotation,
        h.bit_depth, h.duration,
    )
    strings = _str(h.pixel_format) + _str(h.source_codec) + _str(h.source_name)
    streams = struct.pack("<H", len(h.streams)) + b"".join(_encode_stream(s) for s in h.streams)
    body = fixed + strings + streams
    preamble = _PREAMBLE.pack(MAGIC, VERSION, 0, len(body) + 4)
    return preamble + body + struct.pack("<I", zlib.crc32(preamble + body))


def _encode_packet(p: CarriedPacket) -> bytes:
    side = struct.pack("<H", len(p.side_data))
    side += b"".join(_str(kind) + _blob(data) for kind, data in p.side_data)
    return side + p.data


# ---------------------------------------------------------------- writer


def write_dticv(
    out: BinaryIO,
    header: VideoHeader,
    frames: Iterable[tuple[int, int, bytes | None, bool]],
    packets: Iterable[CarriedPacket] = (),
) -> int:
    """Write one container to ``out``; returns the bytes written.

    ``frames`` yields ``(pts, duration, payload or None, source_keyframe)`` in frame-index order;
    ``None`` marks a frame that failed (kept in the index so timing survives). Output depends
    only on the arguments: two writers given the same frames produce the same bytes.
    """
    written = _write(out, _encode_header(header))
    frame_rows, packet_rows = [], []
    for pts, duration, payload, key in frames:
        flags = (FRAME_KEY if key else 0) | (FRAME_MISSING if payload is None else 0)
        data = payload or b""
        frame_rows.append(_FRAME.pack(written, len(data), zlib.crc32(data), pts, duration, flags))
        written += _write(out, data)
    for p in packets:
        if not 0 <= p.stream < len(header.streams):
            raise FormatError(f"packet of stream {p.stream}; the header has {len(header.streams)}")
        data = _encode_packet(p)
        row = _PACKET.pack(written, len(data), zlib.crc32(data), p.pts, p.dts, p.duration,
                           p.stream, PACKET_KEY if p.keyframe else 0)
        packet_rows.append(row)
        written += _write(out, data)
    index = INDEX_MAGIC + struct.pack("<I", len(frame_rows)) + b"".join(frame_rows)
    index += struct.pack("<I", len(packet_rows)) + b"".join(packet_rows)
    index += struct.pack("<I", zlib.crc32(index))
    index_offset = written
    written += _write(out, index)
    head = struct.pack("<QQI", index_offset, len(index), len(frame_rows))
    written += _write(out, head + struct.pack("<I", zlib.crc32(head)) + END_MAGIC)
    return written


def _write(out: BinaryIO, data: bytes) -> int:
    out.write(data)
    return len(data)


# ---------------------------------------------------------------- reading


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
    return header, end


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


def parse_index(data: bytes) -> DticvIndex:
    if len(data) < 12 or data[:4] != INDEX_MAGIC:
        raise FormatError(".dticv index does not start with its magic")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise ChecksumError(".dticv index CRC32 mismatch")
    c = _Cursor(data[4:-4], ".dticv index")
    frames = tuple(FrameEntry(*c.unpack(_FRAME, "frame entry")) for _ in range(_count(c)))
    packets = tuple(PacketEntry(*c.unpack(_PACKET, "packet entry")) for _ in range(_count(c)))
    return DticvIndex(frames=frames, packets=packets)


def _count(c: _Cursor) -> int:
    (n,) = struct.unpack("<I", c.take(4, "entry count"))
    if n > MAX_ENTRIES:
        raise LimitExceededError(f".dticv index claims {n} entries (limit {MAX_ENTRIES})")
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
        self.index = parse_index(read_range(offset, offset + index_size))

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


def pack_dticv(header: VideoHeader, frames: Iterable, packets: Iterable[CarriedPacket] = ()) -> bytes:
    """``write_dticv`` into memory."""
    buffer = io.BytesIO()
    write_dticv(buffer, header, frames, packets)
    return buffer.getvalue()


def open_container(url: str, storage_options: dict | None = None) -> DticvReader:
    """A reader over any fsspec URL; every read is a ranged read (with retries)."""
    from pipeline.storage import open_location, read_bytes

    location = open_location(url, storage_options)
    fs, path = location.fs, location.root
    return DticvReader(lambda a, b: read_bytes(fs, path, a, b), fs.size(path))
