"""What to compress and the CPU read stage: listing, keys, fetch, decode, size buckets.

A source is an fsspec URL prefix (``s3://bucket/photos/``, a local folder), a glob
(``s3://bucket/**/*.jpg``) or a Parquet work list with a ``uri`` column and an optional ``key``
column. Every item gets a *key*: its path relative to the source root. The key names the item
in the archive and decides where ``ditic restore`` writes it, so it must stay inside any folder:
absolute keys and ``..`` are refused.

For millions of objects, drive the job from a Parquet work list: listing a prefix of that size
is slow on every object store.
"""

from __future__ import annotations

import hashlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.manifest import RETRYABLE_ERROR_PREFIX
from pipeline.storage import Location, StorageError, list_files, open_location, read_bytes, with_retries

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_sources",
    "check_key",
    "read_images",
    "size_bucket",
    "READ_COLUMNS",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".avif"}
)
GLOB_CHARS = "*?["
DEFAULT_MAX_SOURCE_BYTES = 512 * 1024**2
DEFAULT_MAX_PIXELS = 64 * 1024**2  # 8k x 8k: more does not fit one GPU batch; raise it on purpose
READ_COLUMNS = [
    "key", "source_uri", "source_bytes", "source_sha256", "width", "height",
    "image", "mode", "source", "bucket", "status", "error", "read_at",
]  # fmt: skip


def check_key(key: str) -> str:
    """``key`` if it is a safe relative path, else ``ValueError``: keys become restore paths."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"empty key: {key!r}")
    parts = key.replace("\\", "/").split("/")
    if key.startswith(("/", "\\")) or (len(key) > 1 and key[1] == ":") or ".." in parts or "\0" in key:
        raise ValueError(f"unsafe key {key!r}: keys must be relative paths without '..'")
    return key


def _work_list(keys: list[str], uris: list[str]) -> pa.Table:
    for key in keys:
        check_key(key)
    table = pa.table({"key": pa.array(keys, pa.string()), "source_uri": pa.array(uris, pa.string())})
    return _deduplicate(table)


def _deduplicate(table: pa.Table) -> pa.Table:
    """Drop repeated (key, uri) rows; the same key for two different objects is an error."""
    seen: dict[str, str] = {}
    keep = []
    for i, (key, uri) in enumerate(
        zip(table["key"].to_pylist(), table["source_uri"].to_pylist(), strict=True)
    ):
        if key in seen:
            if seen[key] != uri:
                raise ValueError(f"key {key!r} names two objects: {seen[key]!r} and {uri!r}")
            continue
        seen[key] = uri
        keep.append(i)
    return table.take(keep) if len(keep) < table.num_rows else table


def _key_from_uri(uri: str) -> str:
    path = uri.split("://", 1)[-1]
    return path.lstrip("/")


def _list_parquet(location: Location) -> pa.Table:
    data = read_bytes(location.fs, location.root)
    table = pq.read_table(pa.BufferReader(data))
    if "uri" not in table.column_names:
        raise ValueError(f"work list {location.url} has no 'uri' column (columns: {table.column_names})")
    uris = [str(u) for u in table["uri"].to_pylist()]
    if "key" in table.column_names:
        keys = [
            k if k is not None else _key_from_uri(u)
            for k, u in zip(table["key"].to_pylist(), uris, strict=True)
        ]
    else:
        keys = [_key_from_uri(u) for u in uris]
    return _work_list(keys, uris)


def _glob_root(path: str) -> str:
    first = min(path.index(c) for c in GLOB_CHARS if c in path)
    return path[:first].rsplit("/", 1)[0]


def list_sources(
    url: str,
    storage_options: dict[str, Any] | None = None,
    extensions: frozenset[str] | None = IMAGE_EXTENSIONS,
) -> pa.Table:
    """The work list of a source: a table with ``key`` and ``source_uri``, sorted by key.

    ``extensions`` filters prefix listings (None keeps every object); globs and Parquet work
    lists are taken as given.
    """
    location = open_location(url, storage_options)
    fs, root = location.fs, location.root
    if any(c in root for c in GLOB_CHARS):
        base = _glob_root(root)
        paths = [p for p in with_retries(lambda: fs.glob(root), f"glob {url}") if fs.isfile(p)]
    elif root.endswith(".parquet") and with_retries(lambda: fs.isfile(root), f"stat {url}"):
        return _list_parquet(location)
    elif with_retries(lambda: fs.isfile(root), f"stat {url}"):
        base, paths = root.rsplit("/", 1)[0], [root]
    else:
        fs.invalidate_cache(root)
        if not fs.exists(root):
            raise FileNotFoundError(f"source {url} does not exist")
        base = root
        paths = list_files(fs, root)
        if extensions is not None:
            paths = [p for p in paths if _extension(p) in extensions]
    keys = [p[len(base) :].lstrip("/") for p in sorted(paths)]
    return _work_list(keys, [location.uri(p) for p in sorted(paths)])


def _extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def size_bucket(height: int, width: int, multiple: int = 64) -> str:
    """The padded size a GPU batch shares, as ``"HxW"``: sides rounded up to ``multiple``."""
    return f"{math.ceil(height / multiple) * multiple}x{math.ceil(width / multiple) * multiple}"


def _decode(data: bytes, max_pixels: int) -> dict[str, Any]:
    """Decode under the codec's image policy (EXIF orientation, modes, bomb guard) on the CPU.

    ``image`` is what the model will code (upright 8-bit RGB). For a plain image that is the
    whole story; for anything the policy keeps more of (alpha, grey, 16-bit, ICC/EXIF/XMP) the
    source bytes travel on in ``source`` so the encoder can hand the codec the full image.
    """
    from codec.image import open_image, prepare

    prepared = prepare(open_image(data, max_pixels=max_pixels), max_pixels=max_pixels)
    plain = (prepared.mode, prepared.source_mode, prepared.bit_depth, prepared.metadata) == (
        "RGB",
        "RGB",
        8,
        {},
    )
    return {"image": prepared.rgb, "mode": prepared.mode, "source": b"" if plain else data}


def _read_one(uri: str, options: dict[str, Any], limits: tuple[int, int], multiple: int) -> dict[str, Any]:
    row: dict[str, Any] = {"status": "ok", "error": None, "read_at": time.time()}
    try:
        max_bytes, max_pixels = limits
        location = open_location(uri, options)
        fs, path = location.fs, location.root
        size = with_retries(lambda: fs.size(path), f"stat {uri}")
        if size is not None and size > max_bytes:
            raise ValueError(f"object is {size} bytes, over the limit of {max_bytes}")
        data = read_bytes(fs, path)
        row.update(source_bytes=len(data), source_sha256=hashlib.sha256(data).hexdigest())
        if not data:
            raise ValueError("object is empty (0 bytes)")
        decoded = _decode(data, max_pixels)
        height, width = decoded["image"].shape[:2]
        row.update(decoded, width=width, height=height, bucket=size_bucket(height, width, multiple))
    except StorageError as e:  # storage, not the object, failed: resume reads it again
        row.update(status="error", error=f"{RETRYABLE_ERROR_PREFIX}{e}")
    except Exception as e:  # every failure of one object becomes its error row
        row.update(status="error", error=f"{type(e).__name__}: {e}")
    return row


def read_images(
    batch: dict[str, np.ndarray],
    storage_options: dict[str, Any] | None = None,
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bucket_multiple: int = 64,
    threads: int = 8,
) -> dict[str, Any]:
    """The CPU read stage, for ``ds.map_batches(read_images, fn_kwargs=...)``.

    Input columns ``key`` and ``source_uri``; output adds the pixels after the codec's image
    policy (``image``, upright H×W×3 uint8), the mode decoding will return (``mode``), the
    source bytes where the policy keeps more than RGB (``source``; empty otherwise), ``width``,
    ``height``, ``bucket`` (padded size), source size and SHA-256, ``status`` and ``error``.
    A bad object never raises: it becomes a row with ``status="error"`` and a 1×1 placeholder
    image, and flows on to the manifest.
    """
    options = dict(storage_options or {})
    uris = [str(u) for u in batch["source_uri"]]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
        rows = list(
            pool.map(lambda u: _read_one(u, options, (max_source_bytes, max_pixels), bucket_multiple), uris)
        )
    placeholder = np.zeros((1, 1, 3), np.uint8)
    out: dict[str, Any] = {"key": [str(k) for k in batch["key"]], "source_uri": uris}
    for column in READ_COLUMNS[2:]:
        out[column] = [row.get(column) for row in rows]
    out["image"] = [img if img is not None else placeholder for img in out["image"]]
    out["bucket"] = [b or "" for b in out["bucket"]]
    out["source"] = [m or b"" for m in out["source"]]
    out["mode"] = [m or "" for m in out["mode"]]
    return out
