"""Storage retries, listing and keys: local folders, globs, Parquet work lists, and S3 (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.sources import check_key, list_sources, size_bucket
from pipeline.storage import StorageError, list_files, read_bytes, with_retries, write_bytes_atomic


class FlakyMemoryFileSystem(MemoryFileSystem):
    """An in-memory filesystem whose reads fail ``failures`` times before succeeding."""

    protocol = "flakymem"
    failures = 0

    def cat_file(self, path, start=None, end=None, **kwargs):
        if FlakyMemoryFileSystem.failures > 0:
            FlakyMemoryFileSystem.failures -= 1
            raise ConnectionResetError("connection reset by peer (injected)")
        return super().cat_file(path, start=start, end=end, **kwargs)


def test_transient_errors_are_retried_then_succeed() -> None:
    fs = FlakyMemoryFileSystem(skip_instance_cache=True)
    fs.pipe_file("/bucket/a.bin", b"0123456789")
    FlakyMemoryFileSystem.failures = 3
    assert read_bytes(fs, "/bucket/a.bin", start=2, end=5, attempts=5) == b"234"
    assert FlakyMemoryFileSystem.failures == 0


def test_transient_errors_that_persist_become_storage_error() -> None:
    fs = FlakyMemoryFileSystem(skip_instance_cache=True)
    fs.pipe_file("/bucket/a.bin", b"x")
    FlakyMemoryFileSystem.failures = 10
    with pytest.raises(StorageError, match="failed after 3 attempts"):
        read_bytes(fs, "/bucket/a.bin", attempts=3)
    FlakyMemoryFileSystem.failures = 0


def test_permanent_errors_are_not_retried() -> None:
    calls = []

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("s3://b/nope")

    with pytest.raises(FileNotFoundError):
        with_retries(missing, "read s3://b/nope", attempts=5)
    assert len(calls) == 1


def test_atomic_write_leaves_only_the_final_name(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    write_bytes_atomic(fs, f"{tmp_path}/_staging/x.tmp", f"{tmp_path}/out/deep/x.bin", b"abc")
    assert (tmp_path / "out/deep/x.bin").read_bytes() == b"abc"
    assert list_files(fs, f"{tmp_path}/_staging") == []


@pytest.mark.parametrize("key", ["/etc/passwd", "../up.jpg", "a/../../b.jpg", "", "C:\\x.jpg", "a\\..\\b"])
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_safe_keys_pass() -> None:
    assert check_key("a/b/c.jpg") == "a/b/c.jpg"
    assert check_key("x..y.png") == "x..y.png"


def _tree(root: Path) -> None:
    (root / "sub/deeper").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.PNG", "sub/deeper/c.webp", "notes.txt", "sub/README.md"):
        (root / name).write_bytes(b"data of " + name.encode())


def test_prefix_listing_keeps_images_with_relative_keys(tmp_path: Path) -> None:
    _tree(tmp_path)
    work = list_sources(str(tmp_path))
    assert work["key"].to_pylist() == ["a.jpg", "sub/b.PNG", "sub/deeper/c.webp"]
    assert all(
        uri.endswith(key)
        for uri, key in zip(work["source_uri"].to_pylist(), work["key"].to_pylist(), strict=True)
    )
    everything = list_sources(f"file://{tmp_path}", extensions=None)
    assert "notes.txt" in everything["key"].to_pylist()


def test_glob_listing_keys_are_relative_to_the_glob_root(tmp_path: Path) -> None:
    _tree(tmp_path)
    work = list_sources(f"{tmp_path}/sub/**/*.webp")
    assert work["key"].to_pylist() == ["deeper/c.webp"]


def test_parquet_work_list_with_and_without_keys(tmp_path: Path) -> None:
    _tree(tmp_path)
    uris = [str(tmp_path / "a.jpg"), str(tmp_path / "sub/b.PNG")]
    pq.write_table(pa.table({"uri": uris, "key": ["x/a.jpg", None]}), tmp_path / "list.parquet")
    work = list_sources(str(tmp_path / "list.parquet"))
    assert work["key"].to_pylist() == ["x/a.jpg", str(tmp_path / "sub/b.PNG").lstrip("/")]
    pq.write_table(pa.table({"uri": uris + uris[:1]}), tmp_path / "dup.parquet")
    assert list_sources(str(tmp_path / "dup.parquet")).num_rows == 2  # same object twice: once


def test_parquet_work_list_rejects_bad_lists(tmp_path: Path) -> None:
    pq.write_table(pa.table({"path": ["a"]}), tmp_path / "nouri.parquet")
    with pytest.raises(ValueError, match="no 'uri' column"):
        list_sources(str(tmp_path / "nouri.parquet"))
    pq.write_table(
        pa.table({"uri": ["/a.jpg", "/b.jpg"], "key": ["same", "same"]}), tmp_path / "clash.parquet"
    )
    with pytest.raises(ValueError, match="names two objects"):
        list_sources(str(tmp_path / "clash.parquet"))
    pq.write_table(pa.table({"uri": ["/a.jpg"], "key": ["../escape.jpg"]}), tmp_path / "unsafe.parquet")
    with pytest.raises(ValueError, match="unsafe key"):
        list_sources(str(tmp_path / "unsafe.parquet"))


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_sources(str(tmp_path / "nothing-here"))


def test_size_bucket_rounds_up_to_the_multiple() -> None:
    assert size_bucket(512, 768) == "512x768"
    assert size_bucket(1, 513) == "64x576"
    assert size_bucket(300, 451, multiple=128) == "384x512"


def test_listing_on_s3(s3_store, tmp_path: Path) -> None:
    _tree(tmp_path)
    bucket = s3_store.bucket()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            s3_store.upload(path, f"{bucket}/photos/{path.relative_to(tmp_path)}")
    work = list_sources(f"{bucket}/photos", s3_store.storage_options)
    assert work["key"].to_pylist() == ["a.jpg", "sub/b.PNG", "sub/deeper/c.webp"]
    assert work["source_uri"][0].as_py() == f"{bucket}/photos/a.jpg"
    fs = s3_store.filesystem()
    assert read_bytes(fs, f"{bucket}/photos/a.jpg".removeprefix("s3://"), start=0, end=4) == b"data"
