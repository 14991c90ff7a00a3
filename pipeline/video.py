"""Video sources through PyAV: probe, frame ranges, range decode to RGB.

A video is probed once (demux only: timestamps, keyframes, carried audio/subtitle packets), then
cut into frame ranges that CPU tasks decode independently: each seeks to the keyframe at or
before its first frame and decodes and discards up to it. Frame ``i`` is the ``i``-th frame in
presentation order, named by its pts, so a range decoder knows which frames are its own whatever
the seek lands on. Ranges start on multiples of the coding batch so the frames of one batch never
depend on how the video was split (the container is byte-identical whatever the split).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, BinaryIO

import av
import numpy as np

from codec.errors import InputImageError
from pipeline.dticv import CarriedPacket, CarriedStream, VideoHeader

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoInputError",
    "FrameSlot",
    "VideoProbe",
    "probe_video",
    "plan_ranges",
    "decode_range",
]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm")
Source = str | BinaryIO


class VideoInputError(InputImageError):
    """A video cannot be read: not a media file, no video stream, unreadable headers."""


@dataclass(frozen=True)
class FrameSlot:
    """One frame of the source in presentation order: its pts, duration and where to seek."""

    pts: int
    duration: int
    keyframe: bool
    seek_pts: int  # pts of the last keyframe at or before this frame (in presentation order)


@dataclass
class VideoProbe:
    header: VideoHeader  # model_id / quality left at their defaults; the encoder fills them
    slots: list[FrameSlot]
    packets: list[CarriedPacket] = field(default_factory=list)
    splittable: bool = True  # False: timestamps unusable, decode the video as one range
    warning: str = ""  # e.g. the demuxer stopped early (truncated file)

    @property
    def frame_count(self) -> int:
        return len(self.slots)


def open_media(source: Source) -> av.container.InputContainer:
    try:
        return av.open(source, mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoInputError(f"cannot open as a video: {e}") from e


def video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    raise VideoInputError(f"no video stream (streams: {', '.join(kinds)})")


def _carried(stream: av.stream.Stream, index: int) -> CarriedStream:
    ctx = stream.codec_context
    common = dict(
        kind=stream.type, codec_name=ctx.name, time_base=stream.time_base or Fraction(1, 1000),
        extradata=ctx.extradata or b"", source_index=index, bit_rate=ctx.bit_rate or 0,
        language=stream.language or "",
    )
    if stream.type != "audio":
        return CarriedStream(**common)
    return CarriedStream(
        **common, sample_rate=ctx.sample_rate or 0, channels=ctx.channels or 0,
        layout=ctx.layout.name if ctx.layout else "", sample_format=ctx.format.name if ctx.format else "",
        frame_size=ctx.frame_size or 0,
    )


def _side_data(packet: av.Packet) -> tuple[tuple[str, bytes], ...]:
    try:
        return tuple((sd.data_type, bytes(sd)) for sd in packet.iter_sidedata())
    except (AttributeError, ValueError):
        return ()


def _ts(value: int | None) -> int:
    from pipeline.dticv import NO_PTS

    return NO_PTS if value is None else int(value)


def _demux(container, vs, carried_ids: dict[int, int]) -> tuple[list[tuple], list[CarriedPacket], Any, str]:
    """Walk every packet once: video timestamps, carried packets untouched, and the first
    picture (decoded on the way, for size, pixel format, colour and rotation)."""
    video, packets, first, warning = [], [], None, ""
    streams = [vs, *(s for s in container.streams if s.index in carried_ids)]
    try:
        for p in container.demux(streams):
            if p.size == 0:
                continue  # flush packets, and AVI's empty packets for dropped frames
            if p.stream.index != vs.index:
                packets.append(CarriedPacket(
                    stream=carried_ids[p.stream.index], pts=_ts(p.pts), dts=_ts(p.dts),
                    duration=p.duration or 0, keyframe=p.is_keyframe, data=bytes(p),
                    side_data=_side_data(p),
                ))
                continue
            video.append((p.pts, p.dts, p.is_keyframe, p.duration or 0))
            if first is None:
                first = _try_decode(vs, p)
    except av.error.FFmpegError as e:
        warning = f"demuxing stopped after {len(video)} video packets: {e}"
    if first is None and video:
        first = _try_decode(vs, None)
    return video, packets, first, warning


def _try_decode(vs, packet) -> Any:
    try:
        frames = vs.decode(packet)
    except av.error.FFmpegError:
        return None
    return frames[0] if frames else None


def _declared_seconds(container, vs) -> float | None:
    """The video stream's duration as the container's header states it (None when it does not)."""
    if vs.duration and vs.time_base:
        return float(vs.duration * vs.time_base)
    tag = vs.metadata.get("DURATION", "")  # Matroska writes it per track
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        only_video = len(container.streams) == 1
        return container.duration / av.time_base if only_video and container.duration else None


def _truncation(declared: float | None, slots: list[FrameSlot], tb: Fraction) -> str:
    """A warning when the packets end well before the duration the header declares."""
    found = float((slots[-1].pts + slots[-1].duration - slots[0].pts) * tb)
    if declared is None or declared - found <= max(3 * float(slots[-1].duration * tb), 0.05 * declared):
        return ""
    return f"the video ends at {found:.3f} s but its container declares {declared:.3f} s (truncated file?)"


def _slots(video: list[tuple], tick: int) -> tuple[list[FrameSlot], bool]:
    """Presentation-order frame slots from video packets (decode order)."""
    stamps = [pts if pts is not None else dts for pts, dts, _, _ in video]
    if any(t is None for t in stamps) or len(set(stamps)) != len(stamps):
        # No usable timestamps: the decoder's output order is all we have; synthesise them.
        return [FrameSlot(i * tick, tick, i == 0, 0) for i in range(len(video))], False
    order = sorted(range(len(video)), key=stamps.__getitem__)
    keys = sorted(stamps[i] for i in order if video[i][2]) or [stamps[order[0]]]
    slots = []
    for rank, i in enumerate(order):
        pts = stamps[i]
        nxt = stamps[order[rank + 1]] if rank + 1 < len(order) else None
        duration = nxt - pts if nxt is not None else (video[i][3] or tick)
        k = bisect.bisect_right(keys, pts) - 1
        slots.append(FrameSlot(pts, duration, video[i][2], keys[max(k, 0)]))
    return slots, True


def _check_frame_size(width: int, height: int, verb: str) -> None:
    """A frame larger than the container format's limit (64 Mpx) is refused before frames are decoded."""
    from pipeline.dticv_reader import MAX_FRAME_PIXELS

    if width * height > MAX_FRAME_PIXELS:
        raise VideoInputError(
            f"the video stream {verb} {width}x{height} frames, above the limit of {MAX_FRAME_PIXELS} pixels"
        )


def probe_video(source: Source, name: str = "") -> VideoProbe:
    """Demux a whole video once (no decoding beyond its first frame)."""
    with open_media(source) as container:
        vs = video_stream(container)
        _check_frame_size(vs.codec_context.width, vs.codec_context.height, "declares")
        carried = [s for s in container.streams if s.type in ("audio", "subtitle") and s.codec_context]
        carried_ids = {s.index: i for i, s in enumerate(carried)}
        tb = vs.time_base or Fraction(1, 90000)
        rate = vs.average_rate or vs.guessed_rate
        tick = max(1, round(1 / (rate * tb))) if rate else 1
        video, packets, first, warning = _demux(container, vs, carried_ids)
        note = f": {warning}" if warning else ""
        if not video:
            raise VideoInputError(f"the video stream has no packets{note}")
        if first is None:
            raise VideoInputError(f"the video stream has no decodable frame{note}")
        _check_frame_size(first.width, first.height, "decodes to")
        slots, splittable = _slots(video, tick)
        warning = warning or _truncation(_declared_seconds(container, vs), slots, tb)
        fmt = first.format
        header = VideoHeader(
            width=first.width, height=first.height, time_base=tb, frame_rate=rate,
            color_primaries=first.color_primaries, color_transfer=first.color_trc,
            color_matrix=first.colorspace, color_range=first.color_range,
            rotation=int(first.rotation), bit_depth=max(c.bits for c in fmt.components),
            duration=slots[-1].pts + slots[-1].duration - slots[0].pts, pixel_format=fmt.name,
            source_codec=vs.codec_context.name, source_name=name,
            streams=tuple(_carried(s, s.index) for s in carried),
        )
    return VideoProbe(header, slots, packets, splittable, warning)


def plan_ranges(frame_count: int, range_frames: int, batch_size: int) -> list[tuple[int, int]]:
    """Cut ``[0, frame_count)`` into ranges of about ``range_frames``, each a whole number of
    batches, so batch boundaries (frame_index // batch_size) are the same for every split."""
    if frame_count < 0 or range_frames < 1 or batch_size < 1:
        raise ValueError(f"bad range plan: {frame_count=} {range_frames=} {batch_size=}")
    step = max(batch_size, range_frames // batch_size * batch_size)
    return [(a, min(a + step, frame_count)) for a in range(0, frame_count, step)]


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB24 with the frame's own matrix and range (unspecified: BT.601, limited range)."""
    return frame.to_ndarray(format="rgb24", src_color_range=frame.color_range or None)


@dataclass
class DecodedRange:
    frames: dict[int, np.ndarray]  # frame index -> (H, W, 3) uint8
    errors: dict[int, str]  # frame index -> why it has no picture


def _decode_frames(container, vs, warnings: list[str]):
    """Decoded frames in presentation order; a packet that fails to decode is skipped (the
    decoder resynchronises at the next one) and reported, not fatal."""
    try:
        for packet in container.demux(vs):
            try:
                yield from packet.decode()
            except av.error.InvalidDataError as e:
                warnings.append(f"packet at pts {packet.pts} does not decode: {e}")
    except av.error.FFmpegError as e:
        warnings.append(f"demuxing stopped: {e}")


def decode_range(source: Source, probe: VideoProbe, start: int, stop: int) -> DecodedRange:
    """Decode frames [start, stop) of a probed video to RGB (threaded PyAV decoding)."""
    frames: dict[int, np.ndarray] = {}
    warnings: list[str] = []
    width, height = probe.header.width, probe.header.height
    with open_media(source) as container:
        vs = video_stream(container)
        vs.thread_type = "AUTO"
        if probe.splittable:
            wanted = {probe.slots[i].pts: i for i in range(start, stop)}
            if start > 0:
                container.seek(probe.slots[start].seek_pts, stream=vs, backward=True, any_frame=False)
        for n, frame in enumerate(_decode_frames(container, vs, warnings)):
            index = wanted.get(frame.pts) if probe.splittable else n
            if probe.splittable and frame.pts is not None and frame.pts > probe.slots[stop - 1].pts:
                break
            if index is None or not start <= index < stop:
                continue
            if (frame.width, frame.height) != (width, height):
                warnings.append(f"frame {index} is {frame.width}x{frame.height}, the video {width}x{height}")
                continue
            frames[index] = to_rgb(frame)
            if len(frames) == stop - start:
                break
    reason = "; ".join(warnings[-3:]) or "the decoder produced no picture for this frame"
    errors = {i: reason for i in range(start, stop) if i not in frames}
    return DecodedRange(frames, errors)


def media_summary(source: Source) -> dict[str, Any]:
    """Frame count, timestamps (seconds) and stream kinds of a media file: what tests compare."""
    with open_media(source) as container:
        vs = video_stream(container)
        pts = sorted(
            float(p.pts * p.time_base) for p in container.demux(vs) if p.size and p.pts is not None
        )
        kinds = [s.type for s in container.streams]
        duration = float(container.duration / av.time_base) if container.duration else 0.0
    return {"frames": len(pts), "pts": pts, "streams": kinds, "duration": duration}
