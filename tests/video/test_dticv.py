"""The .dticv container: exact round trips, ranged access, and every way a file can be broken."""

from __future__ import annotations

import struct
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.errors import ChecksumError, FormatError, TruncatedPayloadError, UnsupportedVersionError
from pipeline.dticv import (
    FOOTER_SIZE,
    CarriedPacket,
    CarriedStream,
    VideoHeader,
    pack_dticv,
)
from pipeline.dticv_reader import DticvReader

AUDIO = CarriedStream(
    kind="audio", codec_name="aac", time_base=Fraction(1, 48000), extradata=b"\x11\x90",
    source_index=1, sample_rate=48000, channels=2, layout="stereo", sample_format="fltp",
    frame_size=1024, bit_rate=128000, language="eng",
)
SUBS = CarriedStream(kind="subtitle", codec_name="subrip", time_base=Fraction(1, 1000), source_index=2)
HEADER = VideoHeader(
    width=64, height=48, time_base=Fraction(1, 12800), frame_rate=Fraction(30000, 1001),
    model_id="0123456789abcdef", quality=3, color_primaries=1, color_transfer=1, color_matrix=1,
    color_range=1, rotation=-90, bit_depth=10, duration=5120, pixel_format="yuv420p10le",
    source_codec="h264", source_name="clips/a.mp4", streams=(AUDIO, SUBS),
)


def _frames(n: int = 10, missing: tuple[int, ...] = (3,)) -> list[tuple]:
    return [(i * 512, 512, None if i in missing else bytes([i]) * (7 + i), i % 4 == 0) for i in range(n)]


PACKETS = [
    CarriedPacket(0, -1024, -1024, 1024, True, b"aac0", (("skip_samples", b"\x00\x04" + bytes(8)),)),
    CarriedPacket(0, 0, 0, 1024, True, b"aac1"),
    CarriedPacket(1, 500, 500, 900, True, "héllo".encode()),
]


def test_round_trip_is_exact():
    data = pack_dticv(HEADER, _frames(), PACKETS)
    reader = DticvReader.from_bytes(data)
    assert reader.header == HEADER
    payloads = reader.read_frames()
    assert payloads == [f[2] for f in _frames()]
    assert [(e.pts, e.duration) for e in reader.index.frames] == [(f[0], f[1]) for f in _frames()]
    assert reader.index.frames[0].flags & 2 and reader.index.frames[3].missing
    assert reader.read_packets(list(reader.index.packets)) == PACKETS


def test_same_input_same_bytes_and_empty_video():
    assert pack_dticv(HEADER, _frames(), PACKETS) == pack_dticv(HEADER, iter(_frames()), iter(PACKETS))
    empty = DticvReader.from_bytes(pack_dticv(HEADER, [], []))
    assert empty.frame_count == 0 and empty.read_frames() == []


def test_frame_range_reads_only_its_bytes():
    data = pack_dticv(HEADER, _frames(50, missing=()), PACKETS)
    reads: list[tuple[int, int]] = []

    def read_range(a: int, b: int) -> bytes:
        reads.append((a, b))
        return data[a:b]

    reader = DticvReader(read_range, len(data))
    reads.clear()
    got = reader.read_frames(20, 23)
    assert got == [bytes([i]) * (7 + i) for i in range(20, 23)]
    assert len(reads) == 1
    assert reads[0][1] - reads[0][0] == sum(7 + i for i in range(20, 23))


def test_rejects_foreign_and_future_files():
    data = bytearray(pack_dticv(HEADER, _frames(), PACKETS))
    with pytest.raises(FormatError, match="not a .dticv"):
        DticvReader.from_bytes(b"RIFF" + bytes(data[4:]))
    future = bytearray(data)
    future[8:10] = struct.pack("<H", 9)
    with pytest.raises(UnsupportedVersionError, match="version 9"):
        DticvReader.from_bytes(bytes(future))


def test_bad_model_id_is_refused_at_write():
    bad = VideoHeader(width=1, height=1, time_base=Fraction(1, 25), frame_rate=None, model_id="xyz")
    with pytest.raises(FormatError, match="16 hex"):
        pack_dticv(bad, [])


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_any_truncation_is_a_clear_error(cut):
    data = pack_dticv(HEADER, _frames(), PACKETS)
    cut = cut % len(data)
    with pytest.raises(FormatError):
        DticvReader.from_bytes(data[:cut])


def test_truncated_file_names_the_problem():
    data = pack_dticv(HEADER, _frames(), PACKETS)
    with pytest.raises(TruncatedPayloadError, match="footer missing"):
        DticvReader.from_bytes(data[:-5])


@settings(max_examples=80, deadline=None)
@given(position=st.integers(min_value=0, max_value=10_000), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_detected(position, bit):
    data = bytearray(pack_dticv(HEADER, _frames(missing=()), PACKETS))
    position %= len(data)
    data[position] ^= 1 << bit
    with pytest.raises(FormatError):
        reader = DticvReader.from_bytes(bytes(data))
        reader.read_frames()
        reader.read_packets(list(reader.index.packets))


def test_flipped_payload_bit_is_a_checksum_error():
    data = bytearray(pack_dticv(HEADER, _frames(missing=()), PACKETS))
    reader = DticvReader.from_bytes(bytes(data))
    data[reader.index.frames[4].offset + 2] ^= 0x10
    reader = DticvReader.from_bytes(bytes(data))
    assert reader.read_frames(0, 4)  # frames before the damaged one still read
    with pytest.raises(ChecksumError, match="frame at offset"):
        reader.read_frames(4, 5)


def test_footer_is_fixed_size_at_the_end():
    data = pack_dticv(HEADER, _frames(), PACKETS)
    assert data[-8:] == b"DTICVEND"
    offset, size = struct.unpack_from("<QQ", data, len(data) - FOOTER_SIZE)
    assert offset + size + FOOTER_SIZE == len(data) and data[offset : offset + 4] == b"DIDX"
