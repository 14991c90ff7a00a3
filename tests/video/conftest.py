"""Small test videos made with PyAV: 64x48, a few frames, each with one peculiarity."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

RATE = 25


def _picture(i: int, width: int, height: int) -> np.ndarray:
    """A moving bar over a gradient: frames differ, so a swapped frame shows."""
    y, x = np.mgrid[0:height, 0:width]
    red, green = x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1)
    img = np.stack([red, green, np.full_like(x, 40 * i % 256)], -1)
    img[:, (i * 5) % width : (i * 5) % width + 6] = (255, 255, 255)
    return img.astype(np.uint8)


def make_clip(
    path: Path,
    frames: int = 10,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: str | None = None,
    durations: list[int] | None = None,
    rotation: int = 0,
    gop: int = 4,
) -> Path:
    """Write a clip; ``durations`` (in 1/1000 s) makes it variable frame rate."""
    out = av.open(str(path), "w")
    quiet = {"x265-params": "log-level=error"} if codec == "libx265" else {}
    vs = out.add_stream(codec, rate=RATE, options=quiet)
    vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
    tb = Fraction(1, 1000)
    vs.codec_context.time_base = tb
    vs.codec_context.gop_size = gop
    if rotation:
        vs.set_display_rotation(rotation)
    aus = out.add_stream(audio, rate=48000) if audio else None
    if aus is not None:
        aus.layout = "stereo"
    pts = 0
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(_picture(i, width, height), format="rgb24")
        frame = frame.reformat(format=pix_fmt)
        step = durations[i % len(durations)] if durations else 1000 // RATE
        frame.pts, frame.duration, frame.time_base = pts, step, tb
        pts += step
        out.mux(vs.encode(frame))
    out.mux(vs.encode())
    if aus is not None:
        _write_tone(out, aus, seconds=pts / 1000)
    out.close()
    return path


def _write_tone(out, stream, seconds: float) -> None:
    size = stream.codec_context.frame_size or 1024
    total = int(48000 * seconds)
    for start in range(0, total, size):
        t = np.arange(start, start + size) / 48000
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def corrupt_packet(path: Path, index: int) -> Path:
    """Overwrite the bytes of the ``index``-th video packet (decode order) with 0xFF."""
    with av.open(str(path)) as c:
        spans = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    pos, size = spans[index]
    data = bytearray(path.read_bytes())
    data[pos : pos + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "plain": make_clip(d / "plain.mp4", frames=12),
        "audio_mp4": make_clip(d / "audio.mp4", frames=10, audio="aac"),
        "audio_mkv": make_clip(d / "audio.mkv", frames=10, audio="libopus"),
        "odd": make_clip(d / "odd.mkv", width=63, height=47, pix_fmt="yuv444p"),
        "rotated": make_clip(d / "rotated.mp4", rotation=90),
        "tenbit": make_clip(d / "tenbit.mkv", codec="libx265", pix_fmt="yuv420p10le"),
        "vfr": make_clip(d / "vfr.mkv", durations=[20, 60, 40]),
        "corrupt": corrupt_packet(make_clip(d / "corrupt.avi", codec="mjpeg", pix_fmt="yuvj420p"), 5),
    }


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, clips) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    truncated = d / "truncated.mp4"
    truncated.write_bytes(clips["audio_mp4"].read_bytes()[:1500])
    text = d / "notes.mp4"
    text.write_text("this is not a video\n")
    audio_only = d / "audio_only.mkv"
    with av.open(str(audio_only), "w") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "stereo"
        _write_tone(out, stream, seconds=0.2)
    cut = d / "cut.mkv"  # Matroska cut mid-stream: opens, but its packets stop early
    cut.write_bytes(make_clip(d / "whole.mkv", frames=20).read_bytes()[:2500])
    return {"truncated": truncated, "text": text, "audio_only": audio_only, "cut": cut}


from fixtures_stack import ray_cluster, s3_store  # noqa: E402, F401 - session fixtures for the job tests
