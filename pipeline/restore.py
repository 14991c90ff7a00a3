"""Restore: decode an archive back to PNG files, in the same streaming shape as compression.

    committed rows (ok)  → map_batches(read_payloads)  CPU: ranged reads from the shards
                         → map_batches(Decoder)        actor pool, codec loaded once
                         → write_datasink(ImageFolderSink)  OUT/<key with .png>, atomically

Each item lands at ``OUT/<key>`` with its extension replaced by ``.png``; where two keys would
collide (``a.jpg`` and ``a.png``) both keep their extension and gain ``.png``. A key that would
leave OUT (absolute, ``..``) is refused before anything runs.
"""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image

from pipeline.archive import find_item, read_payload
from pipeline.job import connect_ray
from pipeline.manifest import ArchiveLayout, load_job_record, read_manifests
from pipeline.sink import Datasink, _rows
from pipeline.sources import check_key
from pipeline.storage import Location, open_location, read_bytes, write_bytes_atomic

__all__ = ["restore_archive", "extract_item", "output_names", "read_payloads", "ImageFolderSink"]


def output_names(keys: list[str]) -> dict[str, str]:
    """The relative output path of each key: extension → ``.png``, collisions keep theirs."""
    for key in keys:
        check_key(key)

    def stem(key: str) -> str:
        name = key.rsplit("/", 1)[-1]
        return key[: len(key) - len(name)] + (name.rsplit(".", 1)[0] if "." in name else name) + ".png"

    counts = Counter(stem(k) for k in keys)
    return {k: stem(k) if counts[stem(k)] == 1 else k + ".png" for k in keys}


def archive_model(location: Location, model: str | None, decoder: str | None = None) -> str:
    """The model to decode with: the one given, else the one the archive was written with (which may
    name a decoder, ``ditic-small:fidelity``); ``decoder`` (``perceptual``, ``fidelity``), when given,
    picks that model's DC-AE decoder instead (``NAME:fidelity``, ``load_codec``)."""
    if not model:
        record = load_job_record(location)
        if record is None or not record.get("settings", {}).get("model"):
            raise ValueError(f"{location.url} has no job.json naming its model; pass --model")
        model = record["settings"]["model"]
    if decoder is None:
        return model
    from codec.api import split_decoder

    name = split_decoder(model)[0]
    return name if decoder == "perceptual" else f"{name}:{decoder}"


def _payload_range(row: dict[str, Any]) -> tuple[int, int]:
    """(offset, length) of a manifest row, refused when the manifest lies (negative, empty)."""
    start, length = int(row["payload_offset"]), int(row["payload_bytes"])
    if start < 0 or length <= 0:
        raise ValueError(f"item {row['key']!r}: bad payload range offset={start} bytes={length}")
    return start, length


def _from_shard(shard: bytes, row: dict[str, Any]) -> bytes:
    start, length = _payload_range(row)
    if start + length > len(shard):
        raise ValueError(f"shard {row['payload_uri']} ({len(shard)} bytes) ends inside the payload "
                         f"of {row['key']!r} [{start}, {start + length})")  # fmt: skip
    return shard[start : start + length]


def read_payloads(batch: dict[str, Any], dest: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    """CPU stage of restore: the payload of each row, by ranged reads (one whole read per shard
    when a batch holds several items of it). A row whose shard lies outside the archive or whose
    range lies outside its shard becomes an error row."""
    location = Location(dest, storage_options)
    layout = ArchiveLayout(location)
    shards: dict[str, bytes] = {}
    uris = [str(u) for u in batch["payload_uri"]]
    per_shard = Counter(uris)
    payloads, status, error = [], [], []
    for i, uri in enumerate(uris):
        row = {k: batch[k][i] for k in ("key", "payload_uri", "payload_offset", "payload_bytes")}
        row["status"] = "ok"
        try:
            _payload_range(row)
            if per_shard[uri] > 1 and uri not in shards:
                shards[uri] = read_bytes(location.fs, layout.shard_path(uri))
            payloads.append(_from_shard(shards[uri], row) if uri in shards else read_payload(location, row))
            status.append("ok"), error.append(None)
        except Exception as e:
            payloads.append(b""), status.append("error"), error.append(f"{type(e).__name__}: {e}")
    return {"key": list(batch["key"]), "output": list(batch["output"]), "payload": payloads,
            "status": status, "error": error}  # fmt: skip


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


class ImageFolderSink(Datasink):
    """Write decoded ``image`` rows as PNG files to ``OUT/<output>`` (temporary name, then move)."""

    def __init__(self, out: str, storage_options: dict[str, Any] | None = None) -> None:
        self.location = Location(out, dict(storage_options or {}))
        self.result: dict[str, Any] = {}

    def get_name(self) -> str:
        return "ImageFolderSink"

    def write(self, blocks: Iterable[Any], ctx: Any = None) -> dict[str, Any]:
        fs = self.location.fs
        written, failed = 0, []
        for row in _rows(blocks):
            if row["status"] != "ok":
                failed.append({"key": row["key"], "error": row["error"]})
                continue
            try:
                final = self._target(row["output"])
            except ValueError as e:
                failed.append({"key": row["key"], "error": str(e)})
                continue
            tmp = f"{final}.tmp-{time.time_ns()}"
            write_bytes_atomic(fs, tmp, final, png_bytes(np.asarray(row["image"])))
            written += 1
        return {"written": written, "failed": failed}

    def _target(self, output: str) -> str:
        """The final path of ``output`` under OUT; on a local disk it must also resolve inside OUT,
        so a symbolic link planted in OUT cannot carry a write elsewhere."""
        final = self.location.path(check_key(output))
        if self.location.protocol in ("file", "local"):
            root = os.path.realpath(self.location.root)
            parent = os.path.realpath(os.path.dirname(final))
            if os.path.commonpath([root, parent]) != root or os.path.islink(final):
                raise ValueError(f"{output!r} resolves outside {self.location.url} (a symbolic link?)")
        return final

    def on_write_complete(self, write_result: Any) -> None:
        returns = [r for r in write_result.write_returns if r]
        self.result = {
            "written": sum(r["written"] for r in returns),
            "failed": [f for r in returns for f in r["failed"]],
        }


def restore_archive(
    dest: str,
    out: str,
    model: str | None = None,
    device: str | None = None,
    storage_options: dict[str, Any] | None = None,
    address: str | None = None,
    batch_size: int = 4,
    num_actors: int | None = None,
    progress: bool = True,
    max_pixels: int | None = None,
    decoder: str | None = None,
) -> dict[str, Any]:
    """Decode every ok item of the archive ``dest`` to PNG files under ``out``; a payload above
    ``max_pixels`` becomes a failed item (default: the codec's limit). ``decoder``: ``archive_model``'s."""
    import ray

    from pipeline.stages import Decoder

    options = dict(storage_options or {})
    location = open_location(dest, options)
    model = archive_model(location, model, decoder)
    rows = read_manifests(
        location, columns=["key", "status", "payload_uri", "payload_offset", "payload_bytes"]
    )
    rows = [r for r in rows.to_pylist() if r["status"] == "ok"]
    names = output_names([r["key"] for r in rows])
    rows = sorted(
        (dict(r, output=names[r["key"]]) for r in rows), key=lambda r: (r["payload_uri"], r["payload_offset"])
    )
    started = time.time()
    result: dict[str, Any] = {"written": 0, "failed": []}
    if rows:
        connect_ray(address)
        ray.data.DataContext.get_current().enable_progress_bars = progress
        gpus = ray.cluster_resources().get("GPU", 0)
        on_gpu = (device or ("cuda" if gpus else "cpu")).startswith("cuda")
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // max(1, batch_size)))
        ds = ds.map_batches(read_payloads, fn_kwargs={"dest": dest, "storage_options": options},
                            batch_size=batch_size, num_cpus=0.5, concurrency=1)  # fmt: skip
        resources = {"num_gpus": 1, "num_cpus": 1} if on_gpu else {"num_cpus": 0.5}
        decoder = {"model": model, "device": device, "max_pixels": max_pixels}
        ds = ds.map_batches(Decoder, fn_constructor_kwargs=decoder,
                            batch_size=batch_size, concurrency=num_actors or (int(gpus) if on_gpu else 1),
                            **resources)  # fmt: skip
        sink = ImageFolderSink(out, options)
        ds.write_datasink(sink)
        result = sink.result
    wall = time.time() - started
    return {
        "items": len(rows),
        **result,
        "wall_s": wall,
        "images_per_s": len(rows) / wall if wall > 0 else None,
    }


def extract_item(
    dest: str, key: str, output: str, model: str | None = None, device: str | None = None,
    storage_options: dict[str, Any] | None = None, max_pixels: int | None = None, decoder: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fetch one item by a ranged read from its shard, decode it here, write a PNG to ``output``."""
    import torch

    from codec.api import load_codec

    options = dict(storage_options or {})
    location = open_location(dest, options)
    row = find_item(location, key)
    payload = read_payload(location, row)
    resolved = device or ("cuda" if torch.cuda.is_available() else "cpu")
    codec = load_codec(archive_model(location, model, decoder), device=resolved, dtype=torch.float32,
                       decode_only=True)
    if max_pixels:
        codec.max_pixels = int(max_pixels)
    image = codec.decode([payload])[0].convert("RGB")
    target = open_location(output, options)
    write_bytes_atomic(
        target.fs, f"{target.root}.tmp-{time.time_ns()}", target.root, png_bytes(np.asarray(image))
    )
    return {
        "key": key,
        "output": output,
        "payload_bytes": len(payload),
        "width": image.width,
        "height": image.height,
    }
