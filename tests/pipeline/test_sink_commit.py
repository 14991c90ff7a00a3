"""The commit protocol of ArchiveSink, resume, and clean-up, on a local disk and on S3.

The sink does not interpret payloads, so these tests feed it rows with arbitrary payload bytes;
the end-to-end tests run it behind the real codec.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.archive import ItemNotFoundError, finalize_archive, find_item, read_payload
from pipeline.manifest import (
    MANIFEST_COLUMNS,
    RETRYABLE_ERROR_PREFIX,
    ArchiveLayout,
    committed_keys,
    read_manifest,
    read_manifests,
)
from pipeline.sink import ArchiveSink, shard_id
from pipeline.storage import open_location

EXPECTED_COLUMNS = [
    "key", "source_uri", "source_bytes", "source_sha256", "width", "height", "model_id", "quality",
    "payload_uri", "payload_offset", "payload_bytes", "bpp", "enc_ms", "entropy_ms", "psnr", "ms_ssim",
    "status", "error", "node", "gpu", "attempt",
]  # fmt: skip


def encoded_rows(keys: list[str], bad: set[str] = frozenset()) -> list[dict]:
    rows = []
    for i, key in enumerate(keys):
        ok = key not in bad
        rows.append({
            "key": key, "source_uri": f"s3://src/{key}", "source_bytes": 1000 + i, "source_sha256": "ab" * 32,
            "width": 64, "height": 48, "model_id": "0123456789abcdef", "quality": 2,
            "payload": os.urandom(50 + 7 * i) if ok else b"", "bpp": 0.1 * (i + 1), "enc_ms": 3.0,
            "entropy_ms": 1.0, "psnr": None, "ms_ssim": None, "status": "ok" if ok else "error",
            "error": None if ok else "InputImageError: cannot identify image", "node": "127.0.0.1",
            "gpu": "cpu", "read_at": 1.0,
        })  # fmt: skip
    return rows


@pytest.fixture(params=["local", "s3"])
def archive_url(request, tmp_path: Path) -> tuple[str, dict]:
    if request.param == "local":
        return str(tmp_path / "archive"), {}
    store = request.getfixturevalue("s3_store")
    return f"{store.bucket()}/archive", store.storage_options


def test_manifest_has_exactly_the_contract_columns() -> None:
    assert MANIFEST_COLUMNS == EXPECTED_COLUMNS


def test_write_commits_one_shard_and_one_manifest(archive_url) -> None:
    url, options = archive_url
    sink = ArchiveSink(url, options, shard_size=4, attempt=1)
    rows = encoded_rows(["a.jpg", "b/c.jpg", "bad.jpg"], bad={"bad.jpg"})
    stats = sink.write_rows(rows)
    assert stats["items"] == 3 and stats["ok"] == 2 and stats["error"] == 1
    location = open_location(url, options)
    layout = ArchiveLayout(location)
    assert len(layout.manifest_paths()) == 1 and len(layout.shard_paths()) == 1
    manifest = read_manifest(location, layout.manifest_paths()[0])
    assert manifest.column_names == EXPECTED_COLUMNS
    by_key = {r["key"]: r for r in manifest.to_pylist()}
    assert by_key["bad.jpg"]["status"] == "error" and by_key["bad.jpg"]["payload_uri"] is None
    assert "cannot identify" in by_key["bad.jpg"]["error"]
    for row in rows[:2]:
        committed = find_item(location, row["key"])
        assert committed["attempt"] == 1
        assert read_payload(location, committed) == row["payload"]  # ranged read, exact bytes
    assert committed_keys(location) == {"a.jpg", "b/c.jpg", "bad.jpg"}


def test_a_retried_task_with_the_same_keys_writes_nothing(archive_url) -> None:
    url, options = archive_url
    sink = ArchiveSink(url, options, shard_size=2)
    rows = encoded_rows(["x.jpg", "y.jpg"])
    assert sink.write_rows(rows) is not None
    assert sink.write_rows(encoded_rows(["y.jpg", "x.jpg"])) is None  # same keys: already committed
    location = open_location(url, options)
    assert read_manifests(location).num_rows == 2
    assert len(ArchiveLayout(location).shard_paths()) == 1


def test_finalize_removes_orphans_staging_and_duplicates(archive_url) -> None:
    url, options = archive_url
    location = open_location(url, options)
    layout = ArchiveLayout(location)
    fs = location.fs
    ArchiveSink(url, options).write_rows(encoded_rows(["k1.jpg", "k2.jpg"], bad={"k2.jpg"}))
    # a racing writer committed k2 (ok this time) and k3 in another shard
    ArchiveSink(url, options).write_rows(encoded_rows(["k2.jpg", "k3.jpg"]))
    # a crash between shard and manifest left an orphan shard and a staging file
    fs.pipe_file(f"{layout.shards}/{shard_id(['zz'])}-deadbeef.bin", b"orphan")
    fs.pipe_file(f"{layout.staging}/half.parquet", b"partial")
    done = finalize_archive(location)
    assert done == {"duplicates_dropped": 1, "orphans_deleted": 1, "staging_deleted": 1}
    table = read_manifests(location)
    assert sorted(table["key"].to_pylist()) == ["k1.jpg", "k2.jpg", "k3.jpg"]
    assert find_item(location, "k2.jpg")["status"] == "ok"  # ok wins over the error row
    assert len(layout.shard_paths()) == 2
    assert finalize_archive(location) == {"duplicates_dropped": 0, "orphans_deleted": 0, "staging_deleted": 0}


def test_missing_key_and_payloadless_rows_are_clear_errors(tmp_path: Path) -> None:
    url = str(tmp_path / "a")
    ArchiveSink(url).write_rows(encoded_rows(["ok.jpg", "broken.jpg"], bad={"broken.jpg"}))
    location = open_location(url)
    with pytest.raises(ItemNotFoundError, match="nope.jpg"):
        find_item(location, "nope.jpg")
    with pytest.raises(ValueError, match="no payload"):
        read_payload(location, find_item(location, "broken.jpg"))


def test_a_batch_with_nan_numbers_commits(tmp_path: Path) -> None:
    """After the Encoder stage Ray hands a read-error row's null numbers over as NaN, and the ok
    rows' integers of the same batch as floats: the shard must commit with nulls and integers."""
    nan = float("nan")
    rows = encoded_rows(["ok.jpg", "gone.jpg"], bad={"gone.jpg"})
    rows[0].update(source_bytes=1000.0, width=np.float64(64), height=48.0, psnr=nan, ms_ssim=np.float32(nan))
    rows[0]["read_at"] = time.time() - 1.0
    rows[1].update(source_bytes=nan, source_sha256=nan, width=nan, height=nan, bpp=nan, enc_ms=nan,
                   entropy_ms=nan, model_id=nan, quality=nan, read_at=nan, payload=nan)  # fmt: skip
    url = str(tmp_path / "archive")
    stats = ArchiveSink(url, shard_size=2).write_rows(rows)
    assert stats is not None and (stats["ok"], stats["error"], stats["bytes_in"]) == (1, 1, 1000)
    assert 1.0 <= stats["wall_s"] < 60 and stats["images_per_s"] > 0  # the NaN read time is ignored
    by_key = {r["key"]: r for r in read_manifests(open_location(url)).to_pylist()}
    ok, gone = by_key["ok.jpg"], by_key["gone.jpg"]
    assert (ok["source_bytes"], ok["width"], ok["height"]) == (1000, 64, 48)
    assert ok["psnr"] is None and ok["ms_ssim"] is None
    assert gone["status"] == "error" and "cannot identify" in gone["error"]
    nulls = ("source_bytes", "source_sha256", "width", "height", "bpp", "quality", "model_id")
    assert all(gone[c] is None for c in nulls)


def _failed_on_storage(rows: list[dict]) -> list[dict]:
    for row in rows:
        if row["status"] == "error":
            row["error"] = f"{RETRYABLE_ERROR_PREFIX}read rel/src/{row['key']}: failed after 5 attempts"
    return rows


def test_resume_reads_storage_failures_again_and_finalize_keeps_one_row(archive_url) -> None:
    url, options = archive_url
    location = open_location(url, options)
    first = ArchiveSink(url, options, attempt=1)
    first.write_rows(encoded_rows(["ok.jpg", "corrupt.jpg"], bad={"corrupt.jpg"}))
    first.write_rows(_failed_on_storage(encoded_rows(["lost.jpg"], bad={"lost.jpg"})))
    # the corrupt image is final (not fetched again); the storage failure is read again
    assert committed_keys(location) == {"ok.jpg", "corrupt.jpg"}
    # a second run still failing on storage, for the very same shard of keys: a new commit, not a skip
    rerun = ArchiveSink(url, options, attempt=2)
    assert rerun.write_rows(_failed_on_storage(encoded_rows(["lost.jpg"], bad={"lost.jpg"}))) is not None
    assert finalize_archive(location)["duplicates_dropped"] == 1
    assert committed_keys(location) == {"ok.jpg", "corrupt.jpg"}
    # a third run reads it: the ok row wins, every key is present exactly once
    assert ArchiveSink(url, options, attempt=3).write_rows(encoded_rows(["lost.jpg"])) is not None
    assert finalize_archive(location)["duplicates_dropped"] == 1
    rows = read_manifests(location).to_pylist()
    assert sorted(r["key"] for r in rows) == ["corrupt.jpg", "lost.jpg", "ok.jpg"]
    lost = find_item(location, "lost.jpg")
    assert (lost["status"], lost["attempt"]) == ("ok", 3)
    assert committed_keys(location) == {"ok.jpg", "corrupt.jpg", "lost.jpg"}


def test_a_final_error_wins_over_a_storage_failure(tmp_path: Path) -> None:
    url = str(tmp_path / "archive")
    location = open_location(url)
    ArchiveSink(url, attempt=1).write_rows(_failed_on_storage(encoded_rows(["k.jpg"], bad={"k.jpg"})))
    ArchiveSink(url, attempt=2).write_rows(encoded_rows(["k.jpg"], bad={"k.jpg"}))  # read, but corrupt
    assert finalize_archive(location)["duplicates_dropped"] == 1
    row = find_item(location, "k.jpg")
    assert row["attempt"] == 2 and "cannot identify" in row["error"]
    assert committed_keys(location) == {"k.jpg"}
