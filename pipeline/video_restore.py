"""``ditic restore-video``: a .dticv container back to a playable file (all of it, or a frame range)."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

from pipeline.storage import open_location
from pipeline.video_manifest import upload_file

__all__ = ["restore_video"]


def _parse_frames(text: str | None, count: int) -> tuple[int, int]:
    if not text:
        return 0, count
    first, sep, last = text.partition(":")
    try:
        start, stop = int(first or 0), int(last) if last else count
    except ValueError:
        start = stop = -1
    if not sep or not 0 <= start < stop <= count:
        raise ValueError(f"--frames {text!r}: need A:B with 0 <= A < B <= {count} (the video's frames)")
    return start, stop


def restore_video(container: str, out: str, storage_options: dict[str, Any] | None = None,
                  model: str = "ditic-small", codec: str = "libx264", crf: int | None = None,
                  frames: str | None = None, device: str = "auto", batch_size: int = 8) -> dict[str, Any]:
    """Decode a .dticv (all of it, or frames ``A:B`` through ranged reads) into a playable file."""
    import torch

    from codec.api import load_codec
    from codec.errors import ModelMismatchError
    from pipeline.dticv_reader import open_container
    from pipeline.video_writer import VideoWriter

    reader = open_container(container, storage_options or {})
    header = reader.header
    start, stop = _parse_frames(frames, reader.frame_count)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device in ("", "auto") else device
    model_codec = load_codec(model, device=device, dtype=torch.float32, decode_only=True)
    if model_codec.model_id != header.model_id:
        raise ModelMismatchError(f"{container} was encoded by model {header.model_id}; {model!r} is "
                                 f"{model_codec.model_id}: pass --model with the encoding model")  # fmt: skip
    entries = reader.index.frames[start:stop]
    shift = entries[0].pts if frames else 0
    packets = reader.read_packets(_packets_between(reader, entries, whole=not frames))
    target = out if "://" not in out else tempfile.mkstemp(suffix=os.path.splitext(out)[1])[1]
    previous, written, started = None, 0, time.time()
    with VideoWriter(target, header, codec, crf, packets, shift=shift) as writer:
        for a in range(start, stop, batch_size):
            payloads = reader.read_frames(a, min(a + batch_size, stop))
            _check_frame_headers(model_codec, payloads, header, a)
            decoded = iter(model_codec.decode_items([p for p in payloads if p is not None]))
            for entry, payload in zip(reader.index.frames[a : a + len(payloads)], payloads, strict=True):
                if payload is not None:
                    previous = np.asarray(next(decoded).image.convert("RGB"))
                elif previous is None:  # only a leading missing frame needs a picture of its own
                    previous = np.zeros((header.height, header.width, 3), np.uint8)
                # a frame that failed at encode time repeats the last picture: timing is kept
                writer.write(previous, entry.pts, entry.duration)
                written += 1
    if target != out:
        location = open_location(out, storage_options)
        upload_file(location, target, location.root)
        os.unlink(target)
    return {"frames": written, "video_bytes": writer.video_bytes, "seconds": time.time() - started,
            "warnings": writer.warnings}  # fmt: skip


def _check_frame_headers(codec: Any, payloads: list[bytes | None], header: Any, first: int) -> None:
    """Every frame payload must be of the container's frame size: its header is read (no decoding)
    before anything is decoded, so a payload that claims a larger picture costs nothing."""
    from codec.errors import FormatError

    for i, payload in enumerate(payloads):
        frame = codec.info(payload) if payload is not None else header
        if (frame.width, frame.height) != (header.width, header.height):
            raise FormatError(f"the payload of frame {first + i} is {frame.width}x{frame.height}; "
                              f"the container's frames are {header.width}x{header.height}")  # fmt: skip


def _packets_between(reader: Any, entries: Any, whole: bool) -> list[Any]:
    """Carried packets overlapping the frames' time span (all of them for a whole video)."""
    if whole:
        return list(reader.index.packets)
    tb = reader.header.time_base
    lo, hi = entries[0].pts * tb, (entries[-1].pts + entries[-1].duration) * tb
    streams = reader.header.streams
    return [p for p in reader.index.packets if lo <= p.pts * streams[p.stream].time_base < hi]
