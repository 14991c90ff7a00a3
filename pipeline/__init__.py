"""Bulk compression on Ray Data over object storage: the building blocks and the drivers.

Building blocks (use them in your own Ray Data plans)::

    from pipeline import read_images, Encoder, ArchiveSink
    ds = ray.data.from_items(work_list)                     # rows: key, source_uri
    ds = ds.map_batches(read_images, num_cpus=0.25)         # CPU: fetch, decode, bucket
    ds = ds.map_batches(Encoder, fn_constructor_kwargs={"model": "ditic-small"},
                        batch_size=8, num_gpus=1, concurrency=4)
    ds.write_datasink(ArchiveSink("s3://bucket/archive"))   # shard + manifest per task

Drivers: :func:`compress_images`, :func:`restore_archive`, :func:`extract_item`,
:func:`verify_archive`, :func:`measure_throughput`. Names resolve lazily, so importing the
package does not start Ray or load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_images": "pipeline.sources",
    "list_sources": "pipeline.sources",
    "Encoder": "pipeline.stages",
    "Decoder": "pipeline.stages",
    "ArchiveSink": "pipeline.sink",
    "NullSink": "pipeline.sink",
    "CompressOptions": "pipeline.job",
    "compress_images": "pipeline.job",
    "measure_throughput": "pipeline.job",
    "restore_archive": "pipeline.restore",
    "extract_item": "pipeline.restore",
    "verify_archive": "pipeline.archive",
    "finalize_archive": "pipeline.archive",
    "read_manifests": "pipeline.manifest",
    "MANIFEST_SCHEMA": "pipeline.manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
