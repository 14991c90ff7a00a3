"""``ditic bench --mode pipeline``: the real compress job (``pipeline.job``) with a discarding sink over
a set of JPEG crops written for the run, beside the codec-only rate measured in the same process before
and after it (steady state and whole run, over 1..N GPUs or simulated ones). ``jobs.bench`` holds the
command line, the codec mode and the shared timing and reporting."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from jobs.bench import DTYPES, _Clock, _parse_sizes, _pct, _photo_paths, _photos, _timed
from jobs.gpu_monitor import GpuMonitor, visible_indexes


# --- the photo set and the codec-only reference -----------------------------------------------
def _write_photo_set(paths: list[Path], width: int, height: int, n: int, folder: Path) -> None:
    """n distinct JPEGs of width x height: random cover-crops and flips of the photos (item i's crop
    depends on i alone). Written by a thread pool: Pillow releases the GIL while it resizes and encodes,
    and a 6,000-image set would otherwise take a minute of the device's time."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    sources = [ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in paths]

    def write(i: int) -> None:
        rng = np.random.default_rng(i)
        im = sources[i % len(sources)]
        scale = rng.uniform(1.0, 1.5)
        big = ImageOps.fit(im, (int(width * scale), int(height * scale)))
        x, y = rng.integers(0, big.width - width + 1), rng.integers(0, big.height - height + 1)
        crop = big.crop((int(x), int(y), int(x) + width, int(y) + height))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        crop.save(folder / f"img{i:06d}.jpg", quality=92)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(n)))


def _codec_only_ms(args: argparse.Namespace, device: str, size: tuple[int, int], batch: int) -> list[float]:
    """Batch times (ms) of ``Codec.encode_items`` alone, in this process, after the warm-up."""
    import torch

    from codec.api import load_codec

    dtype_name = args.dtypes.split(",")[0].strip()
    codec = load_codec(
        args.model, device=device, dtype=getattr(torch, DTYPES[dtype_name]), allow_untrained=True
    )
    # uint8 arrays, as the pipeline's actors get them from the read stage
    images = [np.asarray(im) for im in _photos(_photo_paths(args.images), size[0], size[1], batch)]
    quality = args.quality or max(codec.qualities)
    _, times = _timed(_Clock(device), codec.encode_items, (images, quality), args.warmup, args.repeats)
    del codec
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the pipeline's actors get the card to themselves
    return times


def bench_pipeline(args: argparse.Namespace, device: str) -> list[dict]:
    """The compress pipeline into a discarding sink, beside the codec alone at the same batch size on
    the same device: end-to-end / codec-only images/s, and the cards' utilisation during the run.

    The codec-only rate is measured in this process twice, before and after the pipeline run (the
    card's clocks and the host's load drift over a minute), and the reference is the median over both
    sets of timed batches; the two halves are reported too. With ``--gpus`` (or several
    ``--simulate-gpus`` counts) each point runs once per GPU count, each on a fresh local Ray, with
    ``--items`` images per GPU, and every row gives its rates over the smallest count's."""
    counts: list[int | None] = list(args.gpus or args.simulate_gpus) or [None]
    scaling = bool(args.gpus) or len(counts) > 1
    monitor = GpuMonitor(enabled=device.startswith("cuda") and not args.simulate_gpus).start()
    try:
        rows = []
        for width, height in _parse_sizes(args.sizes):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                size = (width, height)
                point = [_run_point(args, device, size, batch, n, scaling, monitor) for n in counts]
                if scaling:
                    _add_scaling(point)
                rows += point
        return rows
    finally:
        monitor.stop()


def _run_point(  # noqa: PLR0913
    args: argparse.Namespace, device: str, size: tuple[int, int], batch: int, gpus: int | None, scaling: bool,
    monitor: GpuMonitor,
) -> dict:  # fmt: skip
    """One pipeline run of ``size`` crops at ``batch``, on ``gpus`` cards (None: as the machine is);
    ``scaling``: one of several GPU counts, on a fresh local Ray, with ``--items`` images per GPU."""
    import tempfile

    from pipeline.job import CompressOptions, measure_throughput

    width, height = size
    simulated = gpus if args.simulate_gpus else 0
    items = args.items * gpus if scaling and gpus else args.items
    dtype_name = args.dtypes.split(",")[0].strip()
    before = _codec_only_ms(args, device, size, batch)
    with tempfile.TemporaryDirectory() as tmp, _local_ray(None if simulated else gpus, scaling):
        _write_photo_set(_photo_paths(args.images), width, height, items, Path(tmp))
        options = CompressOptions(
            source=tmp, model=args.model, quality=args.quality, batch_size=batch,
            num_actors=args.num_actors, gpus_per_actor=args.gpus_per_actor,
            actor_threads=args.actor_threads, device=device,
            dtype=DTYPES[dtype_name], progress=False, simulate_gpus=simulated,
            allow_untrained=True,  # as the codec-only reference (ditic-official: random weights)
        )  # fmt: skip
        start = time.monotonic()
        result = measure_throughput(options)
        window = (start, time.monotonic())
    after = _codec_only_ms(args, device, size, batch)
    codec_only = 1e3 * batch / _pct(before + after, 50)
    stats = result.pop("ray_stats", "")
    share = args.gpus_per_actor if device.startswith("cuda") or simulated else 0.0
    print(f"Ray Data stages ({width}x{height}, batch {batch}, GPUs {gpus or 'all'}):\n{stats}", flush=True)
    cards = simulated or gpus or _visible_gpus(device)
    utils = monitor.busy_means(*window, gpus=list(range(cards))) if monitor.active and cards else []
    row = dict(result, model=args.model, dtype=dtype_name, width=width, height=height, batch=batch,
               gpus=cards, gpus_per_actor=share,
               gpu_util_pct=statistics.fmean(utils) if utils else float("nan"),
               gpu_util_pct_per_gpu=",".join(f"{u:.0f}" for u in utils), gpu_util_source=monitor.backend,
               codec_only_images_s=codec_only,
               codec_only_before_images_s=1e3 * batch / _pct(before, 50),
               codec_only_after_images_s=1e3 * batch / _pct(after, 50),
               end_to_end_over_codec_only=result["end_to_end_images_per_s"] / codec_only,
               steady_over_codec_only=result["steady_images_per_s"] / codec_only)  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def _visible_gpus(device: str) -> int:
    import torch

    return torch.cuda.device_count() if device.startswith("cuda") else 0


@contextmanager
def _local_ray(gpus: int | None, fresh: bool) -> Iterator[None]:
    """For a scaling run (``fresh``): a fresh local Ray for the run, shut down after it; with ``gpus``
    (real cards) it sees only the first ``gpus`` visible ones (``CUDA_VISIBLE_DEVICES`` of the processes
    Ray starts; this process keeps its own). Otherwise the pipeline's usual Ray (``connect_ray``)."""
    if not fresh:
        yield
        return
    import ray

    if os.environ.get("RAY_ADDRESS"):
        raise ValueError("scaling over GPU counts starts the bench's own local Ray: unset RAY_ADDRESS")
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpus is not None:
        visible = visible_indexes() or list(range(_visible_gpus("cuda")))
        if gpus > len(visible):
            raise ValueError(f"--gpus {gpus}: this machine shows {len(visible)} GPU(s)")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, visible[:gpus]))
    if ray.is_initialized():
        ray.shutdown()
    try:
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def _add_scaling(point: list[dict]) -> None:
    """Each row's rates over those of the point's run on the fewest GPUs (weak scaling: the same work
    per GPU): steady state, whole run, and the codec inside the actors."""
    base = min(point, key=lambda r: r["gpus"])
    for row in point:
        row["scaling_base_gpus"] = base["gpus"]
        for key, rate in (("steady", "steady_images_per_s"), ("end_to_end", "end_to_end_images_per_s"),
                          ("codec", "codec_images_per_s")):  # fmt: skip
            row[f"scaling_{key}"] = row[rate] / base[rate] if base[rate] > 0 else float("nan")


# --- reporting ---------------------------------------------------------------------------------
def _actors(row: dict) -> str:
    share = row.get("gpus_per_actor", 1.0)
    return f"{row['actors']} × {share:g} GPU" if share else f"{row['actors']} (CPU)"


def pipeline_table(rows: list[dict]) -> str:
    head = (
        "| model | dtype | size | batch | GPUs | actors × GPUs each | items | wall s (start-up included) "
        "| end-to-end img/s "
        "| steady-state img/s | codec in pipeline img/s | codec-only img/s | end-to-end / codec-only "
        "| steady / codec-only | GPU util % (busy span) | steady × over fewest GPUs |\n|" + " --- |" * 16
    )
    lines = [head]
    for r in rows:
        util = r.get("gpu_util_pct", float("nan"))
        over = f"{r['scaling_steady']:.2f} (over {r['scaling_base_gpus']})" if "scaling_steady" in r else ""
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['width']}x{r['height']} | {r['batch']} "
            f"| {r.get('gpus', '')}{' (simulated)' if r.get('simulated_gpus') else ''} | {_actors(r)} "
            f"| {r['items']} | {r['wall_s']:.1f} | {r['end_to_end_images_per_s']:.1f} "
            f"| {r['steady_images_per_s']:.1f} | {r['codec_images_per_s']:.1f} "
            f"| {r['codec_only_images_s']:.1f} "
            f"| {r['end_to_end_over_codec_only']:.2f} | {r['steady_over_codec_only']:.2f} "
            f"| {util:.0f}{' (' + r['gpu_util_pct_per_gpu'] + ')' if r.get('gpu_util_pct_per_gpu') else ''} "
            f"| {over} |"
        )
    return "\n".join(lines) + "\n"
