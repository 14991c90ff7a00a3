"""The compress-videos job on Ray (``ditic compress-videos SRC DEST``).

Per video a CPU task probes (demux only) and plans frame ranges; CPU tasks decode the ranges
(PyAV, threaded); a pool of encoder actors (the codec loaded once each, on a GPU when there is
one) codes each range's frames in batches; a final CPU task per video assembles the ranges, in
frame order, into ``DEST/<key>.dticv`` and commits its manifests (layout and commit protocol:
``pipeline/video_manifest.py``). A video with a committed row is skipped on rerun.
Design: docs/VIDEO.md.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.storage import Location, open_location, read_bytes, write_bytes_atomic
from pipeline.video_manifest import (
    FRAME_SCHEMA,
    VIDEO_SCHEMA,
    commit_table,
    committed_videos,
    upload_file,
)

__all__ = ["VideoJob", "VideoEncoder", "compress_videos"]


@dataclass(frozen=True)
class VideoJob:
    src: str
    dest: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    model: str = "ditic-small"
    quality: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    range_frames: int = 64
    batch_size: int = 8
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    cpus_per_task: float = 1.0
    verify: bool = True


def _open(uri: str, storage_options: dict[str, Any]):
    import fsspec

    return fsspec.open(uri, "rb", **storage_options).open()


# ---------------------------------------------------------------- CPU tasks


def probe_source(uri: str, storage_options: dict[str, Any], key: str) -> Any:
    """A VideoProbe, or the error message that makes this video fail."""
    from pipeline.video import probe_video

    try:
        with _open(uri, storage_options) as f:
            return probe_video(f, name=key)
    except (OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


def decode_source_range(uri: str, storage_options: dict[str, Any], probe: Any, start: int, stop: int):
    from pipeline.video import decode_range

    with _open(uri, storage_options) as f:
        return start, stop, decode_range(f, probe, start, stop)


# ---------------------------------------------------------------- encoder actor


class VideoEncoder:
    """Holds one codec; codes the frames of a decoded range in batches of ``batch_size``.

    Batches are the frames sharing ``frame_index // batch_size``, so a frame meets the same
    batch neighbours however the video was cut into ranges. With ``verify`` every payload is
    decoded again: decode speed and PSNR come from the real decoder, not from the encoder.
    """

    def __init__(self, model: str, device: str, dtype: str, quality: int | None, batch_size: int,
                 verify: bool, threads: int = 0) -> None:
        import torch

        from codec.api import load_codec

        if threads:
            torch.set_num_threads(threads)
        if device in ("", "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.codec = load_codec(model, device=device, dtype=getattr(torch, dtype))
        self.quality = self.codec.qualities[-1] if quality is None else quality
        if self.quality not in self.codec.qualities:
            raise ValueError(f"quality {quality} is not one of {self.codec.qualities}")
        self.batch_size, self.verify = batch_size, verify
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{device}"

    def info(self) -> tuple[str, int]:
        return self.codec.model_id, self.quality

    def encode(self, decoded: tuple[int, int, Any]) -> dict[str, Any]:
        start, stop, frames = decoded
        rows = {i: {"frame_index": i, "status": "error", "error": e} for i, e in frames.errors.items()}
        payloads: dict[int, bytes] = {}
        groups: dict[int, list[int]] = {}
        for i in sorted(frames.frames):
            groups.setdefault(i // self.batch_size, []).append(i)
        for indices in groups.values():
            self._encode_batch(indices, frames.frames, rows, payloads)
        ordered = [{**rows[i], "worker": self.worker} for i in sorted(rows)]
        return {"start": start, "stop": stop, "rows": ordered, "payloads": payloads}

    def _encode_batch(self, indices: list[int], pictures: dict, rows: dict, payloads: dict) -> None:
        try:
            items = self.codec.encode_items([pictures[i] for i in indices], quality=self.quality)
        except Exception as e:  # noqa: BLE001 - a bad batch is retried frame by frame below
            if len(indices) > 1:
                for i in indices:
                    self._encode_batch([i], pictures, rows, payloads)
                return
            rows[indices[0]] = {"frame_index": indices[0], "status": "error", "error": f"encode: {e}"}
            return
        for i, item in zip(indices, items, strict=True):
            payloads[i] = item.payload
            rows[i] = {"frame_index": i, "status": "ok", "error": None, "payload_bytes": len(item.payload),
                       "bpp": item.bpp, "enc_ms": item.enc_ms, "entropy_ms": item.entropy_ms}  # fmt: skip
        if self.verify:
            self._check([(i, payloads[i]) for i in indices], pictures, rows)

    def _check(self, coded: list[tuple[int, bytes]], pictures: dict, rows: dict) -> None:
        decoded = self.codec.decode_items([p for _, p in coded])
        for (i, _), item in zip(coded, decoded, strict=True):
            image = np.asarray(item.image.convert("RGB"), dtype=np.float64)
            mse = float(np.mean((image - pictures[i].astype(np.float64)) ** 2))
            rows[i]["dec_ms"] = item.dec_ms
            rows[i]["psnr"] = 10 * np.log10(255.0**2 / mse) if mse > 0 else 100.0


# ---------------------------------------------------------------- assembly (final per-video task)


def assemble_video(job: VideoJob, key: str, uri: str, probe: Any, model_id: str, quality: int,
                   part_refs: list[Any]) -> dict[str, Any]:
    """Write the container from the ranges (fetched one at a time, in order), then commit."""
    import ray

    from pipeline.dticv import VideoHeader, write_dticv

    location = open_location(job.dest, job.storage_options)
    header = VideoHeader(**{**_fields(probe.header), "model_id": model_id, "quality": quality})
    rows: list[dict[str, Any]] = []

    def frames():
        for ref in part_refs:
            part = ray.get(ref)
            for row in part["rows"]:
                slot = probe.slots[row["frame_index"]]
                rows.append({**row, "key": key, "pts": slot.pts})
                yield slot.pts, slot.duration, part["payloads"].get(row["frame_index"]), slot.keyframe

    final = location.path(f"{key}.dticv")
    with tempfile.NamedTemporaryFile(suffix=".dticv") as tmp:
        size = write_dticv(tmp, header, frames(), probe.packets)
        tmp.flush()
        upload_file(location, tmp.name, final)
    _set_offsets(rows, final, location)
    commit_table(location, "frames", key, rows, FRAME_SCHEMA)
    video = _video_row(job, key, uri, location.uri(final), size, header, rows, probe)
    video["ranges"] = len(part_refs)
    commit_table(location, "videos", key, [video], VIDEO_SCHEMA)
    return video


def _fields(header: Any) -> dict[str, Any]:
    return {f: getattr(header, f) for f in header.__dataclass_fields__}


def _set_offsets(rows: list[dict[str, Any]], final: str, location: Location) -> None:
    from pipeline.dticv_reader import DticvReader

    fs = location.fs
    reader = DticvReader(lambda a, b: read_bytes(fs, final, a, b), fs.size(final))
    for row, entry in zip(rows, reader.index.frames, strict=True):
        row["payload_offset"] = None if entry.missing else entry.offset


def _video_row(job: VideoJob, key: str, uri: str, container: str, size: int, header: Any,
               rows: list[dict[str, Any]], probe: Any) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    duration = float(header.duration * header.time_base)
    payload_bits = 8 * sum(r["payload_bytes"] for r in ok)
    enc_s = sum(r["enc_ms"] + r["entropy_ms"] for r in ok) / 1000
    dec_s = sum(r.get("dec_ms") or 0 for r in ok) / 1000
    psnrs = [r["psnr"] for r in ok if r.get("psnr") is not None]
    failed = len(rows) - len(ok)
    status = "ok" if not failed and not probe.warning else ("partial" if ok else "error")
    errors = [probe.warning] if probe.warning else []
    errors += [f"frame {r['frame_index']}: {r['error']}" for r in rows if r["status"] != "ok"][:3]
    return {
        "key": key, "source_uri": uri, "container_uri": container, "container_bytes": size,
        "model_id": header.model_id, "quality": header.quality, "width": header.width,
        "height": header.height, "frame_rate": float(header.frame_rate) if header.frame_rate else None,
        "duration_s": duration, "frames_ok": len(ok), "frames_failed": failed,
        "kbps": payload_bits / duration / 1000 if duration > 0 else None,
        "mean_bpp": float(np.mean([r["bpp"] for r in ok])) if ok else None,
        "encode_fps": len(ok) / enc_s if enc_s > 0 else None,
        "decode_fps": len(ok) / dec_s if dec_s > 0 else None,
        "psnr": float(np.mean(psnrs)) if psnrs else None,
        "status": status, "error": "; ".join(errors) or None, "node": socket.gethostname(),
    }  # fmt: skip


def fail_video(job: VideoJob, key: str, uri: str, error: str) -> dict[str, Any]:
    location = open_location(job.dest, job.storage_options)
    row = {"key": key, "source_uri": uri, "frames_ok": 0, "frames_failed": 0, "status": "error",
           "error": error, "node": socket.gethostname()}  # fmt: skip
    commit_table(location, "videos", key, [row], VIDEO_SCHEMA)
    return row


# ---------------------------------------------------------------- driver


@dataclass
class _Video:
    key: str
    uri: str
    probe: Any = None  # ObjectRef of the VideoProbe
    parts: list[Any] = field(default_factory=list)
    waiting: int = 0


class _Driver:
    """Feeds ranges to the encoder actors round-robin with a bounded window, and starts each
    video's assembly as soon as its last range is coded."""

    def __init__(self, job: VideoJob, actors: list[Any], model_id: str, quality: int) -> None:
        import ray

        cpu = {"num_cpus": job.cpus_per_task, "max_retries": 3}
        self.probe_t = ray.remote(**cpu)(probe_source)
        self.decode_t = ray.remote(**cpu)(decode_source_range)
        self.assemble_t = ray.remote(**cpu)(assemble_video)
        self.fail_t = ray.remote(**cpu)(fail_video)
        self.job, self.actors, self.model_id, self.quality = job, actors, model_id, quality
        self.window, self.turn = 2 * len(actors) + 1, 0
        self.probes: dict[Any, _Video] = {}
        self.queue: list[tuple[_Video, int, int, int]] = []
        self.inflight: dict[Any, _Video] = {}
        self.finals: dict[Any, _Video] = {}

    def run(self, work: list[dict[str, str]]) -> list[dict[str, Any]]:
        import ray

        so = self.job.storage_options
        for w in work:
            video = _Video(w["key"], w["source_uri"])
            video.probe = self.probe_t.remote(video.uri, so, video.key)
            self.probes[video.probe] = video
        while self.probes or self.queue or self.inflight:
            self._submit()
            done, _ = ray.wait([*self.probes, *self.inflight], num_returns=1)
            for ref in done:
                self._probed(ref) if ref in self.probes else self._coded(ref)
        return [self._result(ref, video) for ref, video in self.finals.items()]

    def _probed(self, ref: Any) -> None:
        import ray

        from pipeline.video import plan_ranges

        video = self.probes.pop(ref)
        probe = ray.get(ref)
        if isinstance(probe, str):
            self.finals[self.fail_t.remote(self.job, video.key, video.uri, probe)] = video
            return
        ranges = plan_ranges(probe.frame_count, self.job.range_frames, self.job.batch_size)
        if not probe.splittable:
            ranges = [(0, probe.frame_count)]
        video.parts, video.waiting = [None] * len(ranges), len(ranges)
        self.queue.extend((video, i, a, b) for i, (a, b) in enumerate(ranges))

    def _submit(self) -> None:
        while self.queue and len(self.inflight) < self.window:
            video, i, start, stop = self.queue.pop(0)
            decoded = self.decode_t.remote(video.uri, self.job.storage_options, video.probe, start, stop)
            actor = self.actors[self.turn % len(self.actors)]
            self.turn += 1
            video.parts[i] = actor.encode.remote(decoded)
            self.inflight[video.parts[i]] = video

    def _coded(self, ref: Any) -> None:
        video = self.inflight.pop(ref)
        video.waiting -= 1
        if video.waiting == 0:
            final = self.assemble_t.remote(self.job, video.key, video.uri, video.probe, self.model_id,
                                           self.quality, video.parts)  # fmt: skip
            self.finals[final] = video

    def _result(self, ref: Any, video: _Video) -> dict[str, Any]:
        import ray

        try:
            return ray.get(ref)
        except Exception as e:  # noqa: BLE001 - one video's failure must not end the job
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:500]}"
            return ray.get(self.fail_t.remote(self.job, video.key, video.uri, error))


def compress_videos(job: VideoJob, address: str | None = None) -> dict[str, Any]:
    """Run the job; returns its summary (also written to ``DEST/summary.json``)."""
    import json

    import ray

    from pipeline.sources import check_key, list_sources
    from pipeline.video import VIDEO_EXTENSIONS

    started = time.time()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    work = list_sources(job.src, job.storage_options, extensions=frozenset(VIDEO_EXTENSIONS)).to_pylist()
    location = open_location(job.dest, job.storage_options)
    done = committed_videos(location)
    todo = [w for w in work if check_key(w["key"]) not in done]
    rows: list[dict[str, Any]] = []
    if todo:
        threads = 0 if job.gpus_per_actor else max(1, int(job.cpus_per_actor))
        actor_cls = ray.remote(VideoEncoder).options(num_cpus=job.cpus_per_actor, num_gpus=job.gpus_per_actor)
        args = (job.model, job.device, job.dtype, job.quality, job.batch_size, job.verify, threads)
        actors = [actor_cls.remote(*args) for _ in range(job.actors)]
        try:
            model_id, quality = ray.get(actors[0].info.remote())
        except ray.exceptions.RayError as e:  # the codec did not load: say why, not Ray's trace
            raise ValueError(f"encoder actor failed to start: {str(e).strip().splitlines()[-1]}") from e
        rows = _Driver(job, actors, model_id, quality).run(todo)
        for actor in actors:
            ray.kill(actor)
    summary = _summary(rows, skipped=len(work) - len(todo), wall_s=time.time() - started)
    summary["job"] = asdict(job)
    write_bytes_atomic(location.fs, location.path("_staging", f"{uuid.uuid4().hex}.json"),
                       location.path("summary.json"), json.dumps(summary, indent=2, default=str).encode())
    return summary


def _summary(rows: list[dict[str, Any]], skipped: int, wall_s: float) -> dict[str, Any]:
    frames = sum(r.get("frames_ok") or 0 for r in rows)
    by_status = {s: sum(r["status"] == s for r in rows) for s in ("ok", "partial", "error")}
    return {
        "videos": {**by_status, "skipped": skipped}, "frames_ok": frames,
        "frames_failed": sum(r.get("frames_failed") or 0 for r in rows), "wall_s": round(wall_s, 3),
        "frames_per_s": frames / wall_s if wall_s > 0 else None,
        "errors": {r["key"]: r["error"] for r in rows if r.get("error")},
    }  # fmt: skip
