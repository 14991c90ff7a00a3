"""The archive layout, the manifest schema, and what is already committed (resume).

An archive is a folder (a prefix in object storage)::

    DEST/job.json                     settings of the job and one entry per run
    DEST/shards/<id>-<uuid>.bin       packed payloads: one write task's payloads, concatenated
    DEST/manifests/<id>.parquet       one row per item of that shard: the commit marker
    DEST/_staging/                    temporary names; never read
    DEST/summary.json, summary.parquet  job totals and per-shard statistics of the last run

A manifest exists only once its shard is complete, so the set of manifests *is* the set of
committed items. Shards that no manifest names are orphans of an interrupted write; readers
ignore them and the end of a job deletes them.

Error rows are final, so that a broken object is not fetched again on every rerun, except one
kind: a read that outlived its storage retries (error ``StorageError: ...``) says nothing about
the object, so resume reads it again (:func:`is_retryable`). The rerun's row then replaces it
when the job finalizes (ok before error, see ``pipeline.archive.finalize_archive``).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import Location, list_files, read_bytes, with_retries, write_bytes_atomic

__all__ = [
    "MANIFEST_SCHEMA",
    "MANIFEST_COLUMNS",
    "ArchiveLayout",
    "manifest_table",
    "manifest_bytes",
    "read_manifest",
    "read_manifests",
    "committed_keys",
    "is_retryable",
    "RETRYABLE_ERROR_PREFIX",
    "load_job_record",
    "save_job_record",
]

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # path relative to the source root
        pa.field("source_uri", pa.string()),
        pa.field("source_bytes", pa.int64()),
        pa.field("source_sha256", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("model_id", pa.string()),
        pa.field("quality", pa.int32()),
        pa.field("payload_uri", pa.string()),  # the shard, relative to the archive root
        pa.field("payload_offset", pa.int64()),
        pa.field("payload_bytes", pa.int64()),
        pa.field("bpp", pa.float64()),
        pa.field("enc_ms", pa.float64()),  # model time on the device
        pa.field("entropy_ms", pa.float64()),  # entropy coding time on the CPU
        pa.field("psnr", pa.float64()),
        pa.field("ms_ssim", pa.float64()),
        pa.field("status", pa.string(), nullable=False),  # "ok" or "error"
        pa.field("error", pa.string()),
        pa.field("node", pa.string()),
        pa.field("gpu", pa.string()),
        pa.field("attempt", pa.int32()),  # the job run that committed the row (1 = first run)
    ]
)
MANIFEST_COLUMNS: list[str] = MANIFEST_SCHEMA.names
STATUS_OK = "ok"
STATUS_ERROR = "error"
# the error of a read that outlived its storage retries (``pipeline.storage.StorageError``)
RETRYABLE_ERROR_PREFIX = "StorageError: "


@dataclass(frozen=True)
class ArchiveLayout:
    """Where each part of an archive lives below its root."""

    location: Location

    @property
    def manifests(self) -> str:
        return self.location.path("manifests")

    @property
    def shards(self) -> str:
        return self.location.path("shards")

    @property
    def staging(self) -> str:
        return self.location.path("_staging")

    @property
    def job_record(self) -> str:
        return self.location.path("job.json")

    def summary(self, ext: str) -> str:
        return self.location.path(f"summary.{ext}")

    def manifest_path(self, shard_id: str) -> str:
        return f"{self.manifests}/{shard_id}.parquet"

    def shard_path(self, relative: str) -> str:
        """The filesystem path of a ``payload_uri`` (relative to the archive root)."""
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"payload_uri must be relative to the archive, got {relative!r}")
        return self.location.path(relative)

    def manifest_paths(self) -> list[str]:
        fs = self.location.fs
        return [p for p in list_files(fs, self.manifests) if p.endswith(".parquet")]

    def shard_paths(self) -> list[str]:
        return [p for p in list_files(self.location.fs, self.shards) if p.endswith(".bin")]


def manifest_table(rows: list[dict[str, Any]], metadata: dict[str, str] | None = None) -> pa.Table:
    """Rows (dicts with the manifest columns; missing ones become null) as a manifest table."""
    columns = {name: [row.get(name) for row in rows] for name in MANIFEST_COLUMNS}
    table = pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
    if metadata:
        table = table.replace_schema_metadata({f"ditic.{k}": str(v) for k, v in metadata.items()})
    return table


def manifest_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def read_manifest(location: Location, path: str, columns: list[str] | None = None) -> pa.Table:
    """One committed manifest, as written (with its ``ditic.*`` schema metadata)."""
    data = read_bytes(location.fs, path)
    return pq.read_table(pa.BufferReader(data), columns=columns)


def shard_metadata(table: pa.Table) -> dict[str, str]:
    """The per-shard statistics a manifest carries in its schema metadata."""
    raw = table.schema.metadata or {}
    return {k.decode()[6:]: v.decode() for k, v in raw.items() if k.startswith(b"ditic.")}


def read_manifests(location: Location, columns: list[str] | None = None, with_path: bool = False) -> pa.Table:
    """Every committed manifest concatenated (``manifest`` column added when ``with_path``)."""
    layout = ArchiveLayout(location)
    paths = layout.manifest_paths()

    def _one(path: str) -> pa.Table:
        table = read_manifest(location, path, columns).replace_schema_metadata(None)
        if with_path:
            table = table.append_column("manifest", pa.array([path] * table.num_rows, pa.string()))
        return table

    with ThreadPoolExecutor(max_workers=8) as pool:
        tables = list(pool.map(_one, paths))
    if not tables:
        schema = (
            MANIFEST_SCHEMA if columns is None else pa.schema([MANIFEST_SCHEMA.field(c) for c in columns])
        )
        if with_path:
            schema = schema.append(pa.field("manifest", pa.string()))
        return schema.empty_table()
    return pa.concat_tables(tables)


def is_retryable(status: str | None, error: str | None) -> bool:
    """Whether a committed row failed on storage rather than on its content: resume retries it."""
    return status != STATUS_OK and isinstance(error, str) and error.startswith(RETRYABLE_ERROR_PREFIX)


def committed_keys(location: Location) -> set[str]:
    """The keys a rerun skips: every committed item, ok or error, except retryable errors.

    A key whose only rows are retryable errors is read again by the next run.
    """
    table = read_manifests(location, columns=["key", "status", "error"])
    rows = zip(*(table[c].to_pylist() for c in ("key", "status", "error")), strict=True)
    return {key for key, status, error in rows if not is_retryable(status, error)}


def load_job_record(location: Location) -> dict[str, Any] | None:
    """``job.json`` of the archive, or None for a new archive."""
    fs = location.fs
    path = ArchiveLayout(location).job_record
    fs.invalidate_cache(path)
    if not with_retries(lambda: fs.exists(path), f"stat {path}"):
        return None
    try:
        return json.loads(read_bytes(fs, path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{location.uri(path)} is not valid JSON: {e}") from e


def save_job_record(location: Location, record: dict[str, Any]) -> None:
    layout = ArchiveLayout(location)
    data = json.dumps(record, indent=2, sort_keys=True).encode()
    tmp = f"{layout.staging}/job-{time.time_ns()}.json"
    write_bytes_atomic(location.fs, tmp, layout.job_record, data)
