"""``ArchiveSink``: a Ray Data ``Datasink`` that commits packed payload shards with manifests.

Commit protocol, per write task (one task = one shard):

1. Name the shard by its content: ``<id>`` is a hash of the sorted keys it holds. If
   ``manifests/<id>.parquet`` already exists, an earlier attempt of this very task committed it
   (Ray re-ran a task whose success it did not hear about): return, writing nothing.
2. Concatenate the payloads; write them to ``_staging/<uuid>.bin``, move to
   ``shards/<id>-<uuid>.bin``. The uuid makes every attempt's shard name unique, so two attempts
   never write over each other's bytes.
3. Write the manifest (one row per item, with offset and length into the shard) to
   ``_staging/<uuid>.parquet``, then move it to ``manifests/<id>.parquet``. **This move is the
   commit.** A crash before it leaves only an orphan shard, which readers ignore and the end of
   the job deletes; a crash after it loses nothing.

Error rows are committed too, so that a rerun does not fetch a broken object again.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import time
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from pipeline.manifest import MANIFEST_SCHEMA, ArchiveLayout, manifest_bytes, manifest_table
from pipeline.storage import Location, with_retries, write_bytes_atomic

__all__ = ["ArchiveSink", "NullSink", "shard_id"]

try:  # Ray is a dependency of the pipeline, but the commit logic is usable (and tested) without it
    from ray.data import Datasink
except ImportError:  # pragma: no cover
    Datasink = object  # type: ignore[assignment,misc]


def shard_id(keys: Iterable[str], attempt: int = 1) -> str:
    """A name for the shard holding exactly ``keys`` in job run ``attempt``.

    The same keys in the same run give the same name, so a write task that Ray re-runs finds its
    own commit. A later run gets new names: the keys it writes again (reads that failed on storage,
    see :func:`pipeline.manifest.is_retryable`) must not be mistaken for the earlier commit.
    """
    digest = hashlib.sha256("\n".join([f"attempt {attempt}", *sorted(keys)]).encode()).hexdigest()
    return digest[:24]


INTEGER_COLUMNS = frozenset(f.name for f in MANIFEST_SCHEMA if pa.types.is_integer(f.type))


def _missing(value: Any) -> bool:
    """None, or the NaN that Ray Data's pandas/numpy batches put where a column held None."""
    if value is None:
        return True
    is_float = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    return bool(is_float and math.isnan(value))


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with NaN made None in every manifest column and integer columns as ``int``."""
    out = dict(row)
    for name in MANIFEST_SCHEMA.names:
        value = row.get(name)
        if _missing(value):
            out[name] = None
        elif name in INTEGER_COLUMNS:
            out[name] = int(value)
    return out


def _rows(blocks: Iterable[Any]) -> list[dict[str, Any]]:
    from ray.data.block import BlockAccessor

    rows: list[dict[str, Any]] = []
    for block in blocks:
        rows.extend(BlockAccessor.for_block(block).to_arrow().to_pylist())
    return rows


class ArchiveSink(Datasink):
    """Write encoded rows (the output of :class:`pipeline.stages.Encoder`) into an archive.

    ``shard_size`` is the number of items Ray Data gathers for one write task (one shard).
    ``attempt`` is the job run number stored in every row. Each write task returns the
    statistics of its shard (``None`` when it found the shard already committed).
    """

    def __init__(
        self,
        dest: str,
        storage_options: dict[str, Any] | None = None,
        shard_size: int = 256,
        attempt: int = 1,
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self.location = Location(dest, dict(storage_options or {}))
        self.shard_size = shard_size
        self.attempt = attempt

    @property
    def min_rows_per_write(self) -> int:
        return self.shard_size

    def get_name(self) -> str:
        return "ArchiveSink"

    def write(self, blocks: Iterable[Any], ctx: Any = None) -> dict[str, Any] | None:
        return self.write_rows(_rows(blocks))

    def write_rows(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Commit ``rows`` as one shard (the body of a write task); returns its statistics."""
        if not rows:
            return None
        started = time.time()
        layout = ArchiveLayout(self.location)
        fs = self.location.fs
        sid = shard_id((str(r["key"]) for r in rows), self.attempt)
        final_manifest = layout.manifest_path(sid)
        fs.invalidate_cache(layout.manifests)
        if with_retries(lambda: fs.exists(final_manifest), f"stat {final_manifest}"):
            return None
        token = uuid.uuid4().hex[:12]
        shard_relative = f"shards/{sid}-{token}.bin"
        payload, manifest_rows = self._pack(rows, shard_relative)
        if payload:
            write_bytes_atomic(
                fs, f"{layout.staging}/{token}.bin", layout.shard_path(shard_relative), payload
            )
        stats = _shard_stats(sid, manifest_rows, rows, started)
        table = manifest_table(manifest_rows, metadata=stats)
        write_bytes_atomic(fs, f"{layout.staging}/{token}.parquet", final_manifest, manifest_bytes(table))
        return stats

    def _pack(self, rows: list[dict[str, Any]], shard_relative: str) -> tuple[bytes, list[dict[str, Any]]]:
        chunks: list[bytes] = []
        offset = 0
        out = []
        for row in rows:
            row = _clean(dict(row, attempt=self.attempt))
            payload = row.get("payload")
            data = b"" if _missing(payload) else bytes(payload or b"")
            if row.get("status") == "ok" and data:
                row.update(payload_uri=shard_relative, payload_offset=offset, payload_bytes=len(data))
                chunks.append(data)
                offset += len(data)
            else:
                row.update(status="error", payload_uri=None, payload_offset=None, payload_bytes=None)
                row["error"] = row.get("error") or "no payload was produced"
            out.append(row)
        return b"".join(chunks), out


def _shard_stats(
    sid: str, manifest_rows: list[dict[str, Any]], rows: list[dict[str, Any]], started: float
) -> dict[str, Any]:
    ok = sum(r["status"] == "ok" for r in manifest_rows)
    reads = [float(r["read_at"]) for r in rows if not _missing(r.get("read_at")) and r["read_at"]]
    first_read = min(reads, default=started)
    span = max(time.time() - first_read, 1e-6)
    return {
        "shard": sid,
        "items": len(manifest_rows),
        "ok": ok,
        "error": len(manifest_rows) - ok,
        "bytes_in": sum(int(r.get("source_bytes") or 0) for r in manifest_rows),
        "bytes_out": sum(int(r.get("payload_bytes") or 0) for r in manifest_rows),
        "write_s": round(time.time() - started, 4),
        "wall_s": round(span, 4),
        "images_per_s": round(len(manifest_rows) / span, 4),
        "committed_at": time.time(),
    }


class NullSink(Datasink):
    """A sink that discards everything but counts it: end-to-end throughput without storage."""

    def __init__(self) -> None:
        self.rows = 0
        self.ok = 0

    def get_name(self) -> str:
        return "NullSink"

    def write(self, blocks: Iterable[Any], ctx: Any = None) -> dict[str, Any]:
        rows = _rows(blocks)
        ok = sum(r.get("status") == "ok" for r in rows)
        enc = sum(float(r.get("enc_ms") or 0) + float(r.get("entropy_ms") or 0) for r in rows)
        return {"items": len(rows), "ok": ok, "codec_ms": enc, "at": time.time()}

    def on_write_complete(self, write_result: Any) -> None:
        returns = sorted((r for r in write_result.write_returns if r), key=lambda r: r["at"])
        self.rows = sum(r["items"] for r in returns)
        self.ok = sum(r["ok"] for r in returns)
        self.codec_ms = sum(r["codec_ms"] for r in returns)
        # steady state: the items written after the first block, over the time from it to the last one
        # (start-up — Ray, actors, model load, the first batch through every stage — left out)
        span = returns[-1]["at"] - returns[0]["at"] if len(returns) > 1 else 0.0
        self.steady_images_per_s = sum(r["items"] for r in returns[1:]) / span if span > 0 else 0.0
