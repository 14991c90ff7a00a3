"""Fuzzing the container parser: whatever the bytes, only our FormatError subclasses come out.

Allocation is bounded by the input: tracemalloc watches each parse, and its peak must stay within a
small multiple of the input size plus a constant (the strings returned are copies of the input).
"""

from __future__ import annotations

import tracemalloc
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.bitstream import ALPHA, EXIF, ICC, MODES, SOURCE_MODES, Header, pack, read_header, unpack
from codec.errors import FormatError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    mode = draw(st.sampled_from(MODES))
    header = Header(
        model_id=draw(st.binary(min_size=8, max_size=8)).hex(),
        width=draw(st.integers(1, 5000)),
        height=draw(st.integers(1, 5000)),
        quality=draw(st.integers(0, 255)),
        mode=mode,
        source_mode=draw(st.sampled_from(SOURCE_MODES)),
        bit_depth=draw(st.sampled_from([1, 8, 16, 32])),
        pad_right=draw(st.integers(0, 255)),
        pad_bottom=draw(st.integers(0, 255)),
    )
    strings = draw(st.lists(st.binary(max_size=300), max_size=5))
    metadata = draw(
        st.dictionaries(st.sampled_from([ICC, EXIF, "XMP "]), st.binary(max_size=100), max_size=3)
    )
    if mode in ("RGBA", "LA"):
        metadata[ALPHA] = zlib.compress(draw(st.binary(max_size=50)))
    return pack(header, strings, metadata)


def parse_within_bounds(data: bytes) -> None:
    """Parse with both entry points; fail on any exception other than FormatError or on big allocations."""
    tracemalloc.start()
    try:
        for parse in (unpack, read_header):
            try:
                parse(data)
            except FormatError:
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(data) + 256 * 1024, f"parsing {len(data)} bytes allocated {peak}"


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    parse_within_bounds(data)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_after_the_magic(tail: bytes) -> None:
    parse_within_bounds(b"DTIC\x01" + tail)


@FUZZ
@given(payloads())
def test_valid_payloads_round_trip(data: bytes) -> None:
    header, strings, metadata = unpack(data)
    assert pack(header, strings, metadata) == data
    assert read_header(data) == header


@FUZZ
@given(payloads(), st.data())
def test_mutated_payloads(data: bytes, draw: st.DataObject) -> None:
    mutated = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        pos = draw.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = draw.draw(st.integers(0, 255))
    if draw.draw(st.booleans()):
        pos = draw.draw(st.integers(0, len(mutated)))
        mutated[pos:pos] = draw.draw(st.binary(min_size=1, max_size=8))
    parse_within_bounds(bytes(mutated))
    if bytes(mutated) != data:
        try:
            unpack(bytes(mutated))
        except FormatError:
            return
        raise AssertionError("a mutated payload passed its checksum")


@settings(max_examples=30, deadline=None)
@given(payloads())
def test_every_truncation(data: bytes) -> None:
    for cut in range(len(data)):
        parse_within_bounds(data[:cut])
        try:
            unpack(data[:cut])
        except FormatError:
            continue
        raise AssertionError(f"truncation at {cut} of {len(data)} bytes was accepted")
