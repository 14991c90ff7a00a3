"""The restore writer: RGB frames encoded with a classical codec, carried packets remuxed (PyAV)."""

from __future__ import annotations

from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

from pipeline.dticv import NO_PTS, CarriedPacket, CarriedStream, VideoHeader

__all__ = ["OUTPUT_CODECS", "VideoWriter"]

OUTPUT_CODECS = ("libx264", "libx265", "libsvtav1", "ffv1")
_DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libsvtav1": 25}
_QUIET = {"libx265": {"x265-params": "log-level=error"}}


def _pixel_format(codec: str, width: int, height: int) -> str:
    if codec == "ffv1":
        return "bgr0"  # lossless RGB: the restored file holds exactly the decoded pictures
    if codec == "libsvtav1" or (width % 2 == 0 and height % 2 == 0):
        return "yuv420p"
    return "yuv444p"  # x264/x265 refuse 4:2:0 at odd sizes


def _timestamp(value: int, time_base: Fraction) -> float:
    return float(value * time_base)


def _configure(ctx: av.CodecContext, s: CarriedStream) -> None:
    if s.kind == "audio":
        if s.layout:
            ctx.layout = s.layout
        formats = [f.name for f in (ctx.codec.audio_formats or ())]
        if formats:
            ctx.format = s.sample_format if s.sample_format in formats else formats[0]
    ctx.options = {"strict": "experimental"}


def _encoder_refusal(s: CarriedStream) -> str:
    """Why no encoder context of this codec can stand in for the stream ('' when one can)."""
    try:
        ctx = av.CodecContext.create(s.codec_name, "w")
        if s.kind == "audio":
            ctx.sample_rate = s.sample_rate or 48000
        _configure(ctx, s)
        ctx.open()
    except (ValueError, av.error.FFmpegError) as e:
        return str(e)
    return ""


class VideoWriter:
    """Encode RGB frames with a classical codec, keep their pts, and remux carried packets.

    Audio and subtitle packets are written as stored (no re-encoding): each output stream is
    created for the same codec with the source's parameters, and its extradata set to the
    source's after the (unused) encoder is opened, so a decoder sees the source's stream.
    """

    def __init__(self, target: str | BinaryIO, header: VideoHeader, codec: str = "libx264",
                 crf: int | None = None, packets: list[CarriedPacket] = (), format: str | None = None,
                 shift: int = 0) -> None:
        if codec not in OUTPUT_CODECS:
            raise ValueError(f"output codec {codec!r} is not one of {', '.join(OUTPUT_CODECS)}")
        import os

        os.environ.setdefault("SVT_LOG", "1")
        self.header, self.shift, self.video_bytes, self.warnings = header, shift, 0, []
        self.out = av.open(target, mode="w", format=format)
        self.stream = self._video_stream(codec, crf)
        self.carried = [self._carried_stream(s) for s in header.streams]
        self.pending = sorted(
            (p for p in packets if self.carried[p.stream] is not None), key=self._packet_time
        )

    def _video_stream(self, codec: str, crf: int | None) -> av.VideoStream:
        h = self.header
        options = dict(_QUIET.get(codec, {}))
        if codec in _DEFAULT_CRF:
            options["crf"] = str(_DEFAULT_CRF[codec] if crf is None else crf)
        stream = self.out.add_stream(codec, rate=h.frame_rate or Fraction(25), options=options)
        stream.width, stream.height = h.width, h.height
        stream.pix_fmt = _pixel_format(codec, h.width, h.height)
        stream.time_base = h.time_base
        ctx = stream.codec_context
        ctx.time_base = h.time_base
        ctx.color_primaries, ctx.color_trc = h.color_primaries, h.color_transfer
        ctx.colorspace = 0 if codec == "ffv1" else h.color_matrix
        ctx.color_range = 2 if codec == "ffv1" else h.color_range
        ctx.thread_type = "AUTO"
        if h.rotation:
            stream.set_display_rotation(h.rotation)
        return stream

    def _carried_stream(self, s: CarriedStream) -> av.stream.Stream | None:
        why = _encoder_refusal(s)
        if why:
            return self._mux_only_stream(s, why)
        stream = self.out.add_stream(s.codec_name, rate=s.sample_rate or None)
        _configure(stream.codec_context, s)
        stream.codec_context.open()
        stream.codec_context.extradata = s.extradata or None  # the source's, not the encoder's
        stream.time_base = s.time_base
        if s.language:
            stream.metadata["language"] = s.language
        return stream

    def _mux_only_stream(self, s: CarriedStream, why: str) -> av.stream.Stream | None:
        if s.extradata:
            self.warnings.append(f"{s.kind} stream {s.codec_name} dropped: {why}")
            return None
        try:
            stream = self.out.add_mux_stream(s.codec_name, rate=s.sample_rate or None)
        except (ValueError, av.error.FFmpegError) as e:
            self.warnings.append(f"{s.kind} stream {s.codec_name} dropped: {e}")
            return None
        stream.time_base = s.time_base
        return stream

    def _packet_time(self, p: CarriedPacket) -> float:
        return _timestamp(p.dts if p.dts != NO_PTS else p.pts, self.header.streams[p.stream].time_base)

    def _mux_carried(self, until: float | None) -> None:
        while self.pending and (until is None or self._packet_time(self.pending[0]) <= until):
            p = self.pending.pop(0)
            self.out.mux(self._packet(p, self.header.streams[p.stream].time_base))

    def _packet(self, p: CarriedPacket, tb: Fraction) -> av.Packet:
        from av.packet import PacketSideData, packet_sidedata_type_from_literal

        packet = av.Packet(p.data)
        none = NO_PTS
        packet.pts = None if p.pts == none else p.pts - self._shift_in(tb)
        packet.dts = None if p.dts == none else p.dts - self._shift_in(tb)
        packet.duration, packet.is_keyframe = p.duration, p.keyframe
        packet.stream, packet.time_base = self.carried[p.stream], tb
        for kind, data in p.side_data:
            side = PacketSideData(packet_sidedata_type_from_literal(kind), len(data))
            side.update(data)
            side.to_packet(packet)
        return packet

    def _shift_in(self, tb: Fraction) -> int:
        return round(self.shift * self.header.time_base / tb)

    def write(self, rgb: np.ndarray, pts: int, duration: int) -> None:
        h = self.header
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        pix = self.stream.pix_fmt
        colour = {"dst_colorspace": h.color_matrix, "dst_color_range": h.color_range or None}
        colour = {} if pix == "bgr0" else colour
        frame = frame.reformat(format=pix, **colour)
        frame.pts, frame.duration, frame.time_base = pts - self.shift, duration, h.time_base
        self._mux_carried(_timestamp(pts - self.shift, h.time_base))
        self._mux_video(self.stream.encode(frame))

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self.video_bytes += packet.size
        self.out.mux(packets)

    def close(self) -> None:
        self._mux_video(self.stream.encode(None))
        self._mux_carried(None)
        self.out.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.out.close()
