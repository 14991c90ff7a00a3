"""Object storage through fsspec: URLs, retries with backoff, atomic writes, ranged reads.

Everything the pipeline reads or writes goes through here, so that ``s3://``, ``gs://``,
``file://`` and plain local paths behave the same. Workers receive a URL plus storage options
(plain, picklable data) and open their own filesystem; fsspec caches the instance per process.

Atomicity: an object is written under a temporary name and then moved to its final name.
On a local disk the move is a ``rename``; on S3-like stores it is a server-side copy, and the
final key appears all at once or not at all. Readers therefore never see half an object.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fsspec

from codec.errors import DiticError

__all__ = [
    "StorageError",
    "Location",
    "open_location",
    "parse_storage_options",
    "with_retries",
    "is_transient",
    "read_bytes",
    "write_bytes_atomic",
    "move",
    "list_files",
    "ensure_parent",
]

T = TypeVar("T")

# Errors that no amount of retrying fixes: the object is absent, forbidden or not a file.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    TypeError,
    DiticError,
)


class StorageError(DiticError, OSError):
    """An object store operation failed, after retries where the failure looked transient."""


@dataclass(frozen=True)
class Location:
    """A place in a filesystem: the fsspec filesystem, the root path in it, and the URL given."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return fsspec.core.url_to_fs(self.url, **self.storage_options)[0]

    @property
    def root(self) -> str:
        return fsspec.core.url_to_fs(self.url, **self.storage_options)[1].rstrip("/")

    @property
    def protocol(self) -> str:
        protocol = self.fs.protocol
        return protocol[0] if isinstance(protocol, tuple | list) else protocol

    def path(self, *parts: str) -> str:
        """The filesystem path of ``parts`` below the root (no protocol)."""
        return "/".join([self.root, *(p.strip("/") for p in parts if p)])

    def uri(self, path: str) -> str:
        """A full URL for a filesystem path, e.g. ``s3://bucket/key`` or ``/local/path``."""
        return self.fs.unstrip_protocol(path)


def open_location(url: str, storage_options: dict[str, Any] | None = None) -> Location:
    """A :class:`Location` for ``url`` (``s3://b/p``, ``gs://``, ``file://``, a local path)."""
    if not url:
        raise ValueError("empty storage URL")
    return Location(url=url, storage_options=dict(storage_options or {}))


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """Parse ``--storage-options`` JSON (e.g. ``{"endpoint_url": "http://..."}``)."""
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--storage-options is not valid JSON: {text!r} ({e})") from e
    if not isinstance(options, dict):
        raise ValueError(f"--storage-options must be a JSON object, got {text!r}")
    return options


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away on retry (network, throttling, 5xx) rather than being final."""
    return isinstance(error, Exception) and not isinstance(error, PERMANENT_ERRORS)


def with_retries(
    fn: Callable[[], T],
    what: str,
    attempts: int = 5,
    base_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient errors with jittered exponential backoff.

    Permanent errors (missing object, permission) propagate at once, unchanged. A transient error
    that outlives ``attempts`` becomes a :class:`StorageError` naming ``what``.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            if not is_transient(e):
                raise
            if attempt == attempts:
                raise StorageError(f"{what}: failed after {attempts} attempts: {e!r}") from e
            delay = min(max_delay_s, base_delay_s * 2 ** (attempt - 1))
            time.sleep(delay * (0.5 + random.random()))
    raise AssertionError("unreachable")


def read_bytes(
    fs: fsspec.AbstractFileSystem,
    path: str,
    start: int | None = None,
    end: int | None = None,
    attempts: int = 5,
) -> bytes:
    """The bytes of ``path`` (``[start, end)`` when given: a ranged read), with retries."""
    return with_retries(lambda: fs.cat_file(path, start=start, end=end), f"read {path}", attempts)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, tmp_path: str, final_path: str, data: bytes) -> None:
    """Write ``data`` to ``tmp_path`` then move it to ``final_path``: readers see all or nothing."""
    ensure_parent(fs, tmp_path)
    with_retries(lambda: fs.pipe_file(tmp_path, data), f"write {tmp_path}")
    move(fs, tmp_path, final_path)


def move(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> None:
    """Move ``src`` to ``dst`` (replacing it), with retries; tolerant of a retried move's first half."""
    ensure_parent(fs, dst)

    def _move() -> None:
        if not fs.exists(src) and fs.exists(dst):
            return  # an earlier attempt moved it and then failed to report success
        fs.mv(src, dst)

    with_retries(_move, f"move {src} -> {dst}")


def ensure_parent(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Create the parent folder of ``path`` where the filesystem has real folders (local disks)."""
    if _is_local(fs):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def list_files(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Every file below ``path`` (recursive), fresh from the store, not from fsspec's listing cache."""
    fs.invalidate_cache(path)
    if not with_retries(lambda: fs.exists(path), f"stat {path}"):
        return []
    found = with_retries(lambda: fs.find(path, withdirs=False, detail=True), f"list {path}")
    # Some S3 servers keep an empty "folder" after its last object is gone, and s3fs then
    # reports the folder itself as a file: keep real files below ``path`` only.
    prefix = path.rstrip("/") + "/"
    return sorted(
        name for name, info in found.items() if info.get("type") == "file" and name.startswith(prefix)
    )
