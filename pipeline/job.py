"""The compress driver: list, skip what is committed, stream read → encode → commit, summarise.

``compress_images`` is everything ``ditic compress-images`` does, as a function. The Ray Data
plan it builds is::

    work list (key, source_uri)                      driver: listing minus committed keys
      .map_batches(read_images)                      CPU tasks: fetch, decode, bucket
      .map_batches(Encoder, num_gpus=1)              actor pool, codec loaded once per actor
      .write_datasink(ArchiveSink)                   one shard + manifest per write task

followed by :func:`pipeline.archive.finalize_archive` (duplicates, orphans) and the summary.

``CompressOptions.simulate_gpus = N`` runs the same plan as on N GPUs on a machine without any:
the local Ray declares N GPUs, every encoder actor asks ``num_gpus=1`` (so Ray's GPU scheduling,
the actor pool's size and the sharding are the real ones) but runs the codec on the CPU with one
torch thread. It exercises scheduling; its images/s say nothing about GPU throughput.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.archive import finalize_archive
from pipeline.manifest import ArchiveLayout, committed_keys, load_job_record, save_job_record
from pipeline.sink import ArchiveSink, NullSink
from pipeline.sources import IMAGE_EXTENSIONS, list_sources, read_images
from pipeline.stages import Encoder
from pipeline.storage import Location, list_files, open_location, with_retries
from pipeline.summary import summarize, write_summary

__all__ = [
    "CompressOptions", "EncoderPlacement", "compress_images", "measure_throughput", "connect_ray",
    "clear_archive", "encoder_placement",
]  # fmt: skip


@dataclass
class CompressOptions:
    """The settings of a compress job (the CLI flags of ``ditic compress-images``)."""

    source: str
    dest: str = ""
    model: str = "ditic-small"
    quality: int | None = None
    batch_size: int = 4
    gpus_per_actor: float = 1.0
    num_actors: int | None = None
    cpu_readers: int | None = None
    shard_size: int = 64
    metrics: bool = False
    overwrite: bool = False
    address: str | None = None
    device: str | None = None
    dtype: str = "float32"
    storage_options: dict[str, Any] = field(default_factory=dict)
    extensions: frozenset[str] | None = IMAGE_EXTENSIONS
    progress: bool = True
    actor_threads: int | None = None  # torch CPU threads of a GPU actor (None: Ray's default, one)
    simulate_gpus: int = 0  # N > 0: schedule as on N GPUs, run the codec on the CPU (a simulation)
    allow_untrained: bool = False  # benchmarks only: a model without weights runs on seeded random ones


@dataclass(frozen=True)
class EncoderPlacement:
    """Where and how the encoder actors run: their number, Ray resources, device and torch threads."""

    actors: int
    resources: dict[str, float]
    device: str | None
    threads: int | None


def connect_ray(address: str | None = None, simulate_gpus: int = 0) -> None:
    """Connect to the Ray cluster at ``address`` (or ``RAY_ADDRESS``), else start a local one.

    A local Ray binds to 127.0.0.1 only and has no dashboard; with ``simulate_gpus`` it declares
    that many GPUs (Ray schedules declared GPUs without any hardware behind them).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"address": address, "logging_level": "WARNING"}
    if address == "local":
        _local_ray_on_loopback()
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
        kwargs.update(include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        if simulate_gpus:
            kwargs["num_gpus"] = simulate_gpus
    ray.init(**kwargs)


def _local_ray_on_loopback() -> None:
    """Ray's local-only mode: GCS, raylet, workers and the driver on 127.0.0.1, nothing on other
    interfaces. Ray reads the switch when it is imported, so this process's copy is set directly and
    the processes Ray starts inherit the variable. Never for a cluster (``--address``)."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def _cluster_resources() -> tuple[float, float]:
    import ray

    resources = ray.cluster_resources()
    return float(resources.get("CPU", 1)), float(resources.get("GPU", 0))


def encoder_placement(options: CompressOptions, cpus: float, gpus: float) -> EncoderPlacement:
    """The encoder actors for a cluster of ``cpus`` CPUs and ``gpus`` GPUs (see ``_plan``)."""
    if options.simulate_gpus:
        return _simulated_placement(options, cpus, gpus)
    on_gpu = (options.device or ("cuda" if gpus > 0 else "cpu")).startswith("cuda")
    if on_gpu:
        actors = options.num_actors or max(1, int(gpus // options.gpus_per_actor))
        resources = {"num_gpus": options.gpus_per_actor, "num_cpus": 1.0}
        return EncoderPlacement(actors, resources, options.device, options.actor_threads)
    actors = options.num_actors or 1  # DESIGN §4: whole-CPU actors beside a CPU read stage deadlock
    return EncoderPlacement(actors, {"num_cpus": 0.5}, options.device, max(1, int(cpus // actors)))


def _simulated_placement(options: CompressOptions, cpus: float, gpus: float) -> EncoderPlacement:
    """Actors that hold a declared GPU each, as on a GPU cluster, but encode on the CPU.

    Together they ask a quarter of the cluster's CPUs (at most one each): the read tasks and the
    write tasks (one CPU each) must still be schedulable beside a pool of many actors (DESIGN §4).
    """
    wanted = options.simulate_gpus
    if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 0:
        raise ValueError(f"simulate_gpus must be a whole number of GPUs >= 0, got {wanted!r}")
    if options.device not in (None, "", "auto", "cpu"):
        raise ValueError(
            f"simulate_gpus runs the codec on the CPU; device {options.device!r} contradicts it "
            "(leave the device unset, or drop --simulate-gpus to use real GPUs)"
        )
    if gpus < wanted:
        raise ValueError(
            f"the Ray cluster declares {gpus:g} GPUs, fewer than the {wanted} to simulate: let the job "
            f"start its own Ray (no --address), or start one with `ray start --head --num-gpus {wanted}`"
        )
    actors = options.num_actors or max(1, int(wanted // options.gpus_per_actor))
    share = max(0.0001, math.floor(min(1.0, cpus / (4 * actors)) * 1e4) / 1e4)  # Ray's resolution
    resources = {"num_gpus": options.gpus_per_actor, "num_cpus": share}
    return EncoderPlacement(actors, resources, "cpu", 1)


def _plan(options: CompressOptions, work: pa.Table) -> Any:
    """The Ray Data dataset of encoded rows for ``work`` (nothing runs until it is consumed)."""
    import ray

    cpus, gpus = _cluster_resources()
    placement = encoder_placement(options, cpus, gpus)
    readers = options.cpu_readers or max(1, int(cpus // 2))
    read_batch = max(1, min(options.batch_size, 16))
    blocks = max(1, math.ceil(work.num_rows / read_batch))
    ds = ray.data.from_items(work.to_pylist(), override_num_blocks=blocks)
    ds = ds.map_batches(
        read_images,
        fn_kwargs={"storage_options": options.storage_options},
        batch_size=read_batch,
        num_cpus=0.25,  # unlike the encoder's, so Ray Data keeps the two stages apart (no fusion)
        concurrency=readers,
    )
    return ds.map_batches(
        Encoder,
        fn_constructor_kwargs={
            "model": options.model,
            "quality": options.quality,
            "device": placement.device,
            "dtype": options.dtype,
            "metrics": options.metrics,
            "cpu_threads": placement.threads,
            "allow_untrained": options.allow_untrained,
        },  # fmt: skip
        batch_size=options.batch_size,
        concurrency=placement.actors,
        **placement.resources,
    )


def clear_archive(location: Location) -> None:
    """Delete an archive's parts (and nothing else under the prefix): ``--overwrite``."""
    fs = location.fs
    layout = ArchiveLayout(location)
    paths = [layout.job_record, layout.summary("json"), layout.summary("parquet")]
    for folder in (layout.manifests, layout.shards, layout.staging):
        paths.extend(list_files(fs, folder))
    for path in paths:
        fs.invalidate_cache(path)
        if fs.exists(path):
            with_retries(lambda p=path: fs.rm_file(p), f"delete {path}")


def _start_run(location: Location, options: CompressOptions) -> tuple[dict[str, Any], int]:
    record = load_job_record(location)
    settings = {"model": options.model, "quality": options.quality}
    if record is None:
        record = {"settings": settings, "source": options.source, "runs": []}
    elif record["settings"] != settings:
        raise ValueError(
            f"{location.url} was written with {record['settings']}, not {settings}: "
            "use the same --model/--quality to resume, or --overwrite"
        )
    attempt = len(record["runs"]) + 1
    record["runs"].append({"attempt": attempt, "started_at": time.time(), "status": "running"})
    save_job_record(location, record)
    return record, attempt


def _pending(
    options: CompressOptions, location: Location | None, work: pa.Table | None = None
) -> tuple[pa.Table, int]:
    if work is None:
        work = list_sources(options.source, options.storage_options, options.extensions)
    if location is None:
        return work, 0
    done = committed_keys(location)
    if not done:
        return work, 0
    mask = pc.invert(pc.is_in(work["key"], pa.array(sorted(done), pa.string())))
    return work.filter(mask), len(done)


def compress_images(options: CompressOptions) -> dict[str, Any]:
    """Compress every image of ``options.source`` into the archive ``options.dest``; resumable.

    Returns the job summary (also written to ``DEST/summary.json`` and ``summary.parquet``).
    """
    import ray

    started = time.time()
    location = open_location(options.dest, options.storage_options)
    # listed first: a refused source (a missing prefix, a work list whose keys escape) leaves the
    # archive as it was, with no run recorded as started
    listed = list_sources(options.source, options.storage_options, options.extensions)
    if options.overwrite:
        clear_archive(location)
    record, attempt = _start_run(location, options)
    work, skipped = _pending(options, location, listed)
    if work.num_rows:
        connect_ray(options.address, options.simulate_gpus)
        ray.data.DataContext.get_current().enable_progress_bars = options.progress
        sink = ArchiveSink(options.dest, options.storage_options, options.shard_size, attempt)
        _plan(options, work).write_datasink(sink)
    cleanup = finalize_archive(location)
    wall = time.time() - started
    summary = summarize(location, run={
        "attempt": attempt, "wall_s": wall, "submitted": work.num_rows, "skipped": skipped, **cleanup,
        "options": {k: v for k, v in asdict(options).items() if k not in ("storage_options", "extensions")},
    })  # fmt: skip
    write_summary(location, summary)
    record["runs"][-1].update(status="complete", finished_at=time.time(), wall_s=wall)
    save_job_record(location, record)
    return summary


def measure_throughput(options: CompressOptions) -> dict[str, Any]:
    """Run the compress pipeline into a discarding sink: end-to-end vs codec-only images/s.

    Nothing is written. ``end_to_end_images_per_s`` counts listing-to-sink wall time over all
    actors; ``codec_images_per_s`` is what the actors' codec calls alone sustain
    (items / summed codec seconds × actors).
    """
    import ray

    work, _ = _pending(options, None)
    connect_ray(options.address, options.simulate_gpus)
    ray.data.DataContext.get_current().enable_progress_bars = options.progress
    sink = NullSink()
    started = time.time()
    ds = _plan(options, work)
    ds.write_datasink(sink)
    wall = time.time() - started
    written = getattr(ds, "_write_ds", None)  # Ray keeps the executed write here; its stats say which
    stages = written.stats() if written is not None else ""  # operator took the time
    actors = encoder_placement(options, *_cluster_resources()).actors
    codec_s = sink.codec_ms / 1000
    return {
        "items": sink.rows,
        "ok": sink.ok,
        "wall_s": wall,
        "actors": actors,
        "simulated_gpus": options.simulate_gpus,
        "end_to_end_images_per_s": sink.rows / wall if wall > 0 else 0.0,
        "steady_images_per_s": sink.steady_images_per_s,
        "codec_images_per_s": sink.ok * actors / codec_s if codec_s > 0 else 0.0,
        "ray_stats": stages,
    }
