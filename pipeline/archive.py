"""Reading and checking a finished archive: random access, verification, clean-up after crashes.

* :func:`find_item` / :func:`read_payload`: one item's manifest row and its bytes, by a ranged
  read from its shard (no shard is downloaded whole).
* :func:`verify_archive`: every payload's CRCs (through ``codec.bitstream``, without decoding),
  every manifest row's range inside its shard, every key a safe relative path (restore writes it
  below OUT), every ``payload_uri`` a shard of this archive, no key committed twice; orphans are
  reported. A hostile manifest is a list of problems, never an abort.
* :func:`finalize_archive`: run by the driver after all writes of a job: drops duplicate rows
  (possible only when a killed driver's task committed while the rerun was already listing),
  then deletes orphan shards and staging leftovers. Only one job may write an archive at a time.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from codec.errors import DiticError
from pipeline.manifest import (
    ArchiveLayout,
    is_retryable,
    manifest_bytes,
    read_manifest,
    read_manifests,
)
from pipeline.sources import check_key
from pipeline.storage import Location, list_files, read_bytes, with_retries, write_bytes_atomic

__all__ = [
    "find_item",
    "read_payload",
    "verify_archive",
    "finalize_archive",
    "VerifyReport",
    "ItemNotFoundError",
]


SHARD_NAME = re.compile(r"shards/[A-Za-z0-9_-][A-Za-z0-9._-]*\.bin")  # what ArchiveSink writes


class ItemNotFoundError(DiticError, LookupError):
    """The archive holds no committed item under the key asked for."""


def find_item(location: Location, key: str) -> dict[str, Any]:
    """The committed manifest row of ``key``; :class:`ItemNotFoundError` when there is none."""
    table = read_manifests(location)
    rows = table.filter(pc.equal(table["key"], key)).to_pylist()
    if not rows:
        raise ItemNotFoundError(f"key {key!r} is not in the archive {location.url}")
    return rows[0]


def read_payload(location: Location, row: dict[str, Any]) -> bytes:
    """The payload of a manifest row, by a ranged read of its shard."""
    if row.get("status") != "ok" or row.get("payload_uri") is None:
        raise ValueError(f"item {row.get('key')!r} has no payload: {row.get('error')}")
    path = ArchiveLayout(location).shard_path(row["payload_uri"])
    start = int(row["payload_offset"])
    data = read_bytes(location.fs, path, start=start, end=start + int(row["payload_bytes"]))
    if len(data) != int(row["payload_bytes"]):
        raise ValueError(f"shard {row['payload_uri']} ends inside the payload of {row['key']!r}")
    return data


@dataclass
class VerifyReport:
    """What ``verify_archive`` found; ``problems`` make it fail, ``warnings`` do not."""

    manifests: int = 0
    items: int = 0
    ok: int = 0
    errors: int = 0
    payloads_checked: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def _check_payload(payload: bytes, row: dict[str, Any]) -> str | None:
    from codec.bitstream import read_header, unpack

    try:
        header = read_header(payload)
        unpack(payload)
    except Exception as e:
        return f"{row['key']!r}: payload fails its checks: {type(e).__name__}: {e}"
    width, height = getattr(header, "width", None), getattr(header, "height", None)
    if (width, height) != (row.get("width"), row.get("height")) and width is not None:
        return f"{row['key']!r}: payload is {width}x{height}, manifest says {row['width']}x{row['height']}"
    return None


def _verify_shard(
    location: Location, relative: str, rows: list[dict[str, Any]], report: VerifyReport
) -> None:
    path = ArchiveLayout(location).shard_path(relative)
    try:
        shard = read_bytes(location.fs, path)
    except FileNotFoundError:
        report.problems.append(f"shard {relative} is missing ({len(rows)} items point into it)")
        return
    for row in rows:
        start, length = int(row["payload_offset"]), int(row["payload_bytes"])
        if start < 0 or length <= 0 or start + length > len(shard):
            report.problems.append(
                f"{row['key']!r}: range [{start}, {start + length}) lies outside "
                f"{relative} ({len(shard)} bytes)"
            )
            continue
        problem = _check_payload(shard[start : start + length], row)
        report.payloads_checked += 1
        if problem:
            report.problems.append(problem)


def _row_problem(row: dict[str, Any]) -> str | None:
    """What makes a manifest row unsafe or unreadable, judged from the row alone (None: nothing)."""
    key = row.get("key")
    try:
        check_key(key)
    except ValueError as e:
        return f"{key!r}: {e} (restore refuses the archive)"
    if row.get("status") != "ok":
        return None
    uri = row.get("payload_uri")
    if not isinstance(uri, str) or not SHARD_NAME.fullmatch(uri):
        return f"{key!r}: payload_uri {uri!r} is outside the archive's shards/ folder"
    start, length = row.get("payload_offset"), row.get("payload_bytes")
    if not isinstance(start, int) or not isinstance(length, int):
        return f"{key!r}: ok item without a payload range (offset {start!r}, bytes {length!r})"
    return None


def _read_rows(location: Location, paths: list[str], report: VerifyReport) -> list[dict[str, Any]]:
    tables = []
    for path in paths:
        try:
            tables.append(read_manifest(location, path).replace_schema_metadata(None))
        except Exception as e:
            report.problems.append(f"manifest {path} is unreadable: {type(e).__name__}: {e}")
    try:
        return pa.concat_tables(tables).to_pylist() if tables else []
    except pa.ArrowInvalid as e:  # a manifest of another schema
        report.problems.append(f"manifests do not share the manifest schema: {e}")
        return []


def verify_archive(location: Location, check_payloads: bool = True) -> VerifyReport:
    """Check an archive without decoding any image (see the module docstring)."""
    layout = ArchiveLayout(location)
    report = VerifyReport()
    paths = layout.manifest_paths()
    report.manifests = len(paths)
    if not paths:
        report.problems.append(f"no committed manifest under {location.url}")
        return report
    rows = _read_rows(location, paths, report)
    report.items = len(rows)
    report.ok = sum(r.get("status") == "ok" for r in rows)
    report.errors = report.items - report.ok
    duplicates = [k for k, n in Counter(r.get("key") for r in rows).items() if n > 1]
    for key in duplicates[:20]:
        report.problems.append(f"key {key!r} is committed more than once")
    by_shard: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        problem = _row_problem(row)
        if problem:
            report.problems.append(problem)
        elif row["status"] == "ok":
            by_shard[row["payload_uri"]].append(row)
    if check_payloads:
        for relative, shard_rows in sorted(by_shard.items()):
            _verify_shard(location, relative, shard_rows, report)
    _report_orphans(location, set(by_shard), report)
    return report


def _orphans(location: Location, referenced: set[str]) -> list[str]:
    layout = ArchiveLayout(location)
    names = {layout.shard_path(r) for r in referenced if SHARD_NAME.fullmatch(r)}
    return [p for p in layout.shard_paths() if p not in names]


def _report_orphans(location: Location, referenced: set[str], report: VerifyReport) -> None:
    for path in _orphans(location, referenced):
        report.warnings.append(f"orphan shard (no manifest; ignored): {location.uri(path)}")


def _deduplicate(location: Location) -> int:
    """Keep one committed row per key; return the number of rows dropped.

    The row kept: ok, else a final error, else a retryable one (a read that failed on storage);
    among equals the first manifest by name.
    """
    table = read_manifests(location, columns=["key", "status", "error"], with_path=True)
    winners: dict[str, tuple[bool, bool, str]] = {}
    columns = (table[c].to_pylist() for c in ("key", "status", "error", "manifest"))
    for key, status, error, path in zip(*columns, strict=True):
        rank = (status != "ok", is_retryable(status, error), path)
        if key not in winners or rank < winners[key]:
            winners[key] = rank
    losers: dict[str, set[str]] = defaultdict(set)
    for key, path in zip(table["key"].to_pylist(), table["manifest"].to_pylist(), strict=True):
        if winners[key][2] != path:
            losers[path].add(key)
    for path, keys in losers.items():
        _drop_rows(location, path, keys)
    return sum(len(k) for k in losers.values())


def _drop_rows(location: Location, path: str, keys: set[str]) -> None:
    table = read_manifest(location, path)
    kept = table.filter(pc.invert(pc.is_in(table["key"], pa.array(sorted(keys), pa.string()))))
    fs = location.fs
    if kept.num_rows == 0:
        with_retries(lambda: fs.rm_file(path), f"delete {path}")
        return
    staging = f"{ArchiveLayout(location).staging}/dedup-{path.rsplit('/', 1)[-1]}"
    write_bytes_atomic(fs, staging, path, manifest_bytes(kept))


def finalize_archive(location: Location) -> dict[str, int]:
    """Drop duplicate rows, delete orphan shards and staging leftovers; return what was done."""
    dropped = _deduplicate(location)
    referenced = set(
        r for r in read_manifests(location, columns=["payload_uri"]).column("payload_uri").to_pylist() if r
    )
    fs = location.fs
    orphans = _orphans(location, referenced)
    staging = list_files(fs, ArchiveLayout(location).staging)
    for path in orphans + staging:
        try:
            with_retries(lambda p=path: fs.rm_file(p), f"delete {path}")
        except FileNotFoundError:
            pass
    _remove_empty_folder(location, ArchiveLayout(location).staging)
    return {"duplicates_dropped": dropped, "orphans_deleted": len(orphans), "staging_deleted": len(staging)}


def _remove_empty_folder(location: Location, path: str) -> None:
    fs = location.fs
    try:
        if fs.isdir(path) and not fs.ls(path):
            fs.rmdir(path)
    except OSError:
        pass  # object stores have no folders to remove; a non-empty one stays


def shard_statistics(location: Location) -> list[dict[str, Any]]:
    """Per-shard statistics stored in each manifest's metadata (see ``ArchiveSink``)."""
    from pipeline.manifest import shard_metadata

    layout = ArchiveLayout(location)
    stats = []
    for path in layout.manifest_paths():
        meta = shard_metadata(read_manifest(location, path, columns=["key"]))
        stats.append(meta | {"manifest": path.rsplit("/", 1)[-1]})
    return stats
