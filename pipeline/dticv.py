"""The ``.dticv`` video container: its byte layout, records and writer (with ``dticv_reader.py``,
its reading half, the only code that knows the layout).

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

from codec.errors import FormatError, LimitExceededError

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


def pack_dticv(header: VideoHeader, frames: Iterable, packets: Iterable[CarriedPacket] = ()) -> bytes:
    """``write_dticv`` into memory."""
    buffer = io.BytesIO()
    write_dticv(buffer, header, frames, packets)
    return buffer.getvalue()
