"""What the compress-videos job writes under DEST, and how: manifests and staged writes.

::

    DEST/<key>.dticv                          the container (docs/FORMAT.md)
    DEST/manifests/frames/<video id>.parquet  one row per frame
    DEST/manifests/videos/<video id>.parquet  one row per video: written last, the commit marker
    DEST/_staging/                            temporary names

Every write goes to a temporary name and is then moved, and final names derive from the key, so
a retried task rewrites the same bytes to the same names: nothing is duplicated or lost.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pyarrow as pa

from pipeline.manifest import manifest_bytes
from pipeline.storage import (
    Location,
    ensure_parent,
    list_files,
    move,
    read_bytes,
    with_retries,
    write_bytes_atomic,
)

__all__ = ["FRAME_SCHEMA", "VIDEO_SCHEMA", "video_id", "commit_table", "committed_videos", "upload_file"]

FRAME_SCHEMA = pa.schema([
    ("key", pa.string()), ("frame_index", pa.int64()), ("pts", pa.int64()), ("payload_offset", pa.int64()),
    ("payload_bytes", pa.int64()), ("bpp", pa.float64()), ("enc_ms", pa.float64()),
    ("entropy_ms", pa.float64()), ("dec_ms", pa.float64()), ("psnr", pa.float64()),
    ("status", pa.string()), ("error", pa.string()), ("worker", pa.string()),
])  # fmt: skip
VIDEO_SCHEMA = pa.schema([
    ("key", pa.string()), ("source_uri", pa.string()), ("container_uri", pa.string()),
    ("container_bytes", pa.int64()), ("model_id", pa.string()), ("quality", pa.int32()),
    ("width", pa.int32()), ("height", pa.int32()), ("frame_rate", pa.float64()),
    ("duration_s", pa.float64()), ("frames_ok", pa.int64()), ("frames_failed", pa.int64()),
    ("kbps", pa.float64()), ("mean_bpp", pa.float64()), ("encode_fps", pa.float64()),
    ("decode_fps", pa.float64()), ("psnr", pa.float64()), ("ranges", pa.int32()),
    ("status", pa.string()), ("error", pa.string()), ("node", pa.string()),
])  # fmt: skip


def video_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in schema.names}, schema=schema)


def commit_table(location: Location, kind: str, key: str, rows: list[dict], schema: pa.Schema) -> None:
    final = location.path("manifests", kind, f"{video_id(key)}.parquet")
    staging = location.path("_staging", f"{uuid.uuid4().hex}.parquet")
    write_bytes_atomic(location.fs, staging, final, manifest_bytes(_table(rows, schema)))


def committed_videos(location: Location) -> dict[str, dict[str, Any]]:
    """Committed video rows by key (ok or error: a rerun skips both)."""
    import pyarrow.parquet as pq

    rows: dict[str, dict[str, Any]] = {}
    for path in list_files(location.fs, location.path("manifests", "videos")):
        if path.endswith(".parquet"):
            for row in pq.read_table(pa.BufferReader(read_bytes(location.fs, path))).to_pylist():
                rows[row["key"]] = row
    return rows


def upload_file(location: Location, local: str, final: str) -> None:
    staging = location.path("_staging", f"{uuid.uuid4().hex}.dticv")
    ensure_parent(location.fs, staging)  # a local DEST has real folders; object stores do not
    with_retries(lambda: location.fs.put_file(local, staging), f"upload {staging}")
    move(location.fs, staging, final)
