"""``ditic bench``: codec and pipeline throughput/latency benchmarks, and the cross-device export.

Modes:
  codec     the model alone on in-memory images (no I/O): encode/decode latency p50/p99 per image,
            images/s and megapixels/s per GPU, the decode split (entropy + heads / DiT / DC-AE decode),
            peak GPU memory, CPU entropy-coding time. Warm-up iterations are excluded. Peaks are
            ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``: totals, the resident weights
            included. Decode rows also give what is allocated after loading the decoding codec and
            between decodes, the CUDA-graph pools and cuBLAS workspaces, and the float64 entropy
            path's bytes.
  pipeline  the real compress job (see ``pipeline.job``), beside the codec-only rate of the same run.
  export    encode real photos on this device and write the payloads, the decoded latents and pixels,
            so another device can prove it decodes them the same (``tools/check_decode.py``).

Every mode's rows also give the cards' utilisation (``jobs.gpu_monitor``: NVML or nvidia-smi samples)
over the timed loops (codec) or each card's busy span of the run (pipeline). ``--gpus 1,2,4``
(pipeline) scales over GPU counts, one run each with the same work per GPU; ``--fidelity`` (codec)
checks the timed decode against an fp32 eager one.

Results: a Parquet table, a Markdown table, a JSON file and a plot (PNG, with matplotlib) under
``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from jobs.bench_plots import write_plot
from jobs.gpu_monitor import GpuMonitor

REPO = Path(__file__).resolve().parent.parent
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--mode", choices=["codec", "pipeline", "export"], default="codec")
    parser.add_argument("--model", default="ditic-small", help="config name or checkpoint path")
    parser.add_argument("--sizes", default="768x512", help="comma-separated WxH list")
    parser.add_argument("--dtypes", default="fp32", help=f"comma-separated, of {sorted(DTYPES)}")
    parser.add_argument("--batch-sizes", default="1", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per point")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations per point")
    parser.add_argument("--quality", type=int, default=None)
    parser.add_argument("--device", default=None, help="cuda if available, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--images", default=None, help="folder of photos to use (default: examples/photos)")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage decode split")
    parser.add_argument("--out", default="out/bench", help="folder for the results")
    parser.add_argument("--items", type=int, default=512,
                        help="pipeline mode: images in the generated set (per GPU with --gpus or several "
                        "--simulate-gpus counts)")  # fmt: skip
    parser.add_argument("--num-actors", type=int, default=None, help="pipeline mode: encoder actors")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DC-AE (codec mode)")
    parser.add_argument("--decode-only", action="store_true",
                        help="codec mode: decode with a decode_only codec (encoders off the GPU), loaded "
                        "after the encoding codec is freed: the decode peak is a decoder's own")  # fmt: skip
    parser.add_argument("--eager-encode", action="store_true",
                        help="with --compile --decode-only: encode with an uncompiled codec (no encoder "
                        "compile to wait for; the enc columns are eager's), decode compiled")  # fmt: skip
    parser.add_argument("--tiled", action="store_true",
                        help="always decode the DC-AE by the budget's tile plan (4 GiB if none is set)")
    parser.add_argument("--decode-memory-gib", default=None, metavar="GIB[,GIB...]",
                        help="DC-AE decode budget over the resident weights: tiled only where the whole "
                        "does not fit (default 4 on CUDA, none on CPU; inf: never tile); several, "
                        "comma-separated (`default` for the default): one decode row each, same payloads, "
                        "one process")  # fmt: skip
    parser.add_argument("--decode-plan", default=None, metavar="KINDS",
                        help="DC-AE decode past the budget, comma-separated of auto, split, tiles: the exact "
                        "split (auto: where the decoder has one; split: or fail) or session 5's blended "
                        "tiles; several: one decode row each, same payloads (default: $DITIC_DECODE_PLAN, "
                        "else auto)")  # fmt: skip
    parser.add_argument("--decode-bytes-per-pixel", type=float, default=None, metavar="B",
                        help="calibrate the DC-AE decode estimate with a measured dc_ae_bytes_per_px")
    parser.add_argument("--fidelity", action="store_true",
                        help="codec mode: decode each point's payloads again with an fp32 eager decoder (its "
                        "whole decode where it fits) and report the PSNR of the timed path's pixels against "
                        "it and whether the entropy-decoded latents are identical")
    parser.add_argument("--gpus-per-actor", type=float, default=1.0,
                        help="pipeline mode: GPUs per encoder actor (0.5: two actors share a GPU, one's CPU "
                        "entropy coding overlapping the other's GPU work)")  # fmt: skip
    parser.add_argument("--actor-threads", type=int, default=None,
                        help="pipeline mode: torch threads per GPU actor (default: Ray's, one)")  # fmt: skip
    parser.add_argument("--simulate-gpus", type=_gpu_counts, default=[], metavar="N[,N...]",
                        help="pipeline mode: a SIMULATION for machines without GPUs: a local Ray declares N "
                        "GPUs, one encoder actor per GPU runs the codec on the CPU; exercises scheduling "
                        "and sharding, its images/s say nothing about GPU throughput. Several counts: "
                        "one run per count, as --gpus")  # fmt: skip
    parser.add_argument("--gpus", type=_gpu_counts, default=[], metavar="N[,N...]",
                        help="pipeline mode: scale over these GPU counts, one run each on the first N "
                        "visible cards (a fresh local Ray per run); --items is then per GPU, so every card "
                        "gets the same work; each row gives its rates over the fewest GPUs' run")  # fmt: skip


def _gpu_counts(text: str) -> list[int]:
    """``--gpus`` / ``--simulate-gpus``: comma-separated whole GPU counts; "0" (or nothing): none."""
    counts = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        if not part.isdigit():
            raise argparse.ArgumentTypeError(f"GPU counts are whole numbers, not {part!r}")
        counts.append(int(part))
    return [] if counts == [0] else counts


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.simulate_gpus and args.mode != "pipeline":
        raise ValueError(f"--simulate-gpus is for --mode pipeline, not --mode {args.mode}")
    if args.gpus and args.mode != "pipeline":
        raise ValueError(f"--gpus is for --mode pipeline, not --mode {args.mode}")
    if args.gpus and args.simulate_gpus:
        raise ValueError("--gpus scales over real GPUs and --simulate-gpus over declared ones: pick one")
    if 0 in args.gpus + args.simulate_gpus:
        raise ValueError("GPU counts to scale over must be at least 1")
    default = "cpu" if args.simulate_gpus else ("cuda" if torch.cuda.is_available() else "cpu")
    device = args.device or default
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mode == "export":
        export_payloads(args.model, device, out, _photo_paths(args.images))
        return 0
    if args.mode == "pipeline":
        from jobs.bench_pipeline import bench_pipeline

        rows = bench_pipeline(args, device)
    else:
        rows = bench_codec(args, device)
    _write(rows, out, args)
    return 0


# --- inputs ------------------------------------------------------------------------------------
def _photo_paths(folder: str | None) -> list[Path]:
    root = Path(folder) if folder else REPO / "examples" / "photos"
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not paths:
        raise ValueError(f"no photos (.jpg/.png) in {root}")
    return paths


def _photos(paths: list[Path], width: int, height: int, n: int) -> list:
    """n real photos cut to exactly width x height (cover-crop), cycling through ``paths``."""
    from PIL import Image, ImageOps

    out = []
    for i in range(n):
        with Image.open(paths[i % len(paths)]) as im:
            out.append(ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (width, height)))
    return out


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        w, _, h = part.strip().lower().partition("x")
        if not (w.isdigit() and h.isdigit()):
            raise ValueError(f"size must look like 768x512, got {part!r}")
        sizes.append((int(w), int(h)))
    return sizes


# --- timing ------------------------------------------------------------------------------------
class _Clock:
    """Wall time around a callable with the device synchronised before and after."""

    def __init__(self, device: str, monitor: GpuMonitor | None = None):
        import torch

        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.monitor = monitor
        self.gpu = int(device.split(":")[1]) if device.startswith("cuda:") else 0
        self.window = (0.0, 0.0)  # time.monotonic() span of the last _timed loop's timed iterations

    def window_util(self) -> float:
        """The device's mean utilisation (%) over the last timed loop; NaN without a monitor's samples."""
        if self.monitor is None:
            return float("nan")
        return self.monitor.mean_between(*self.window, gpus=[self.gpu])

    def __call__(self, fn, *args):  # noqa: ANN001, ANN204
        self.sync()
        start = time.perf_counter()
        result = fn(*args)
        self.sync()
        return result, (time.perf_counter() - start) * 1e3


def _timed(clock: _Clock, fn, args: tuple, warmup: int, repeats: int) -> tuple[object, list[float]]:  # noqa: ANN001
    result = None
    for _ in range(warmup):
        result, _ = clock(fn, *args)
    times = []
    start = time.monotonic()
    for _ in range(repeats):
        result, ms = clock(fn, *args)
        times.append(ms)
    clock.window = (start, time.monotonic())
    return result, times


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _peak(device: str, fn) -> tuple[object, float, float]:  # noqa: ANN001
    """fn's result and its peak GPU memory in GiB: allocated (live tensors), and reserved. Reserved also
    counts the CUDA-graph pools, whose working memory a replay uses without allocating it, and what
    earlier sizes left in them: it is the process's footprint, the figure to hold against a budget."""
    import torch

    if not device.startswith("cuda"):
        return fn(), float("nan"), float("nan")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30


def _steady_peak(device: str, fn) -> float:  # noqa: ANN001
    """Peak allocated GiB of one more call, after warm-up: without the first call's compiling and graph
    capture (``dec_peak_gib`` includes them), i.e. what a long restore job holds image after image."""
    import torch

    if not device.startswith("cuda"):
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def _stages(codec, payloads: list[bytes], clock: _Clock, repeats: int) -> dict[str, float]:  # noqa: ANN001
    """Median ms of the decode split for one payload, each stage as the codec runs it: entropy decoding,
    heads + DiT step (one CUDA graph on a GPU), DC-AE decode, and the pixels to the host as the image."""
    import torch

    from codec import bitstream
    from codec.model import PAD_MULTIPLE

    unpacked = bitstream.unpack(payloads[0])
    header, strings, _ = unpacked
    shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
    model, dtype = codec.model, codec.dtype
    stages = ("entropy_ms", "heads_dit_ms", "vae_decode_ms", "to_host_ms")
    split: dict[str, list[float]] = {k: [] for k in stages}
    for _ in range(repeats):
        with torch.no_grad():  # as Codec.decode_items: the heads + DiT step is not graphed on a CPU
            (y_hat, y_scales), a = clock(model.decompress_latent, [strings], shape, header.quality)
            inverse = model.codec.inverse_gain_for(header.quality, 1, y_hat.device, dtype)
            latent_hat, b = clock(codec._dit_step, y_hat.to(dtype), y_scales.to(dtype), inverse)
            x_hat, c = clock(codec.decode_pixels, latent_hat)
            _, d = clock(codec.to_images, x_hat, [unpacked])
        del x_hat
        for key, ms in zip(split, (a, b, c, d), strict=True):
            split[key].append(ms)
    return {k: statistics.median(v) for k, v in split.items()} | _dc_ae_memory(codec, latent_hat, header)


def _dc_ae_memory(codec, latent_hat, header) -> dict:  # noqa: ANN001
    """The DC-AE decode's tile plan, its estimated and (CUDA) measured peak over what was resident."""
    import torch

    plan = codec.decode_plan(header.width, header.height)
    row = {"decode_plan": plan.describe(), "dc_ae_est_gib": plan.estimated_bytes / 2**30}
    if codec.device.type != "cuda":
        return row
    # a graph replay allocates nothing: measure the plan's working set with the decoder's graphs off
    # (same compiled kernels, same tensors), and report the graph pool that holds it beside
    graphs = getattr(codec, "_vae_decoder", None)
    enabled = graphs is not None and graphs.enabled
    if graphs is not None:
        graphs.enabled = False
    try:
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        codec.decode_pixels(latent_hat)
        torch.cuda.synchronize()
    finally:
        if graphs is not None:
            graphs.enabled = enabled
    used = torch.cuda.max_memory_allocated() - resident
    per_call_px = plan.call_pixels  # a split plan's largest strip call (its global part runs at 1/8..1/32)
    row |= {"dc_ae_peak_gib": used / 2**30, "resident_gib": resident / 2**30,
            "dc_ae_bytes_per_px": used / per_call_px}  # fmt: skip
    if graphs is not None and graphs.pool is not None:
        pool = tuple(graphs.pool)
        held = sum(seg["total_size"] for seg in torch.cuda.memory_snapshot()
                   if tuple(seg.get("segment_pool_id", ())) == pool)  # fmt: skip
        row["dc_ae_graph_pool_gib"] = held / 2**30
    return row


def bench_codec(args: argparse.Namespace, device: str) -> list[dict]:
    paths = _photo_paths(args.images)
    monitor = GpuMonitor(enabled=device.startswith("cuda")).start()
    try:
        return _bench_codec(args, device, paths, _Clock(device, monitor))
    finally:
        monitor.stop()


def _bench_codec(args: argparse.Namespace, device: str, paths: list[Path], clock: _Clock) -> list[dict]:
    import torch

    rows = []
    budgets = _budgets(args)
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, DTYPES[dtype_name.strip()])
        points = [(w, h, int(b)) for w, h in _parse_sizes(args.sizes) for b in args.batch_sizes.split(",")]
        eager = args.decode_only and args.eager_encode
        codec = _load(args, device, dtype, compile=args.compile and not eager)
        loaded = _loaded(codec, device)
        quality = args.quality or max(codec.qualities)
        encoded = [
            _bench_encode(codec, _photos(paths, w, h, b), quality, clock, args, device) for w, h, b in points
        ]
        if args.decode_only:  # free the encoding codec first: the decode peak is then a decoder's own
            del codec
            _free(device)
            codec = _load(args, device, dtype, decode_only=True)
            loaded = _loaded(codec, device)
        dtype_rows, checks = [], []
        for (width, height, batch), (encoded_row, payloads) in zip(points, encoded, strict=True):
            for budget in budgets:
                for kind in _plan_kinds(args):
                    codec.decode_memory_gib, codec.decode_plan_kind = budget, kind
                    row = dict(encoded_row) | loaded
                    megapixels = width * height / 1e6
                    decode_row, check = _bench_decode(codec, payloads, clock, args, device, megapixels)
                    row.update(decode_row)
                    if check is not None:
                        checks.append((row, check))
                    row.update(_held(device))
                    row.update(model=args.model, dtype=dtype_name, width=width, height=height, batch=batch,
                               decode_only=args.decode_only, decode_plan_kind=kind or "default",
                               decode_memory_gib=budget, eager_encode=bool(eager))  # fmt: skip
                    if args.decode_memory_gib is not None:
                        row["decode_budget"] = "default budget" if budget is None else f"{budget:g} GiB"
                    dtype_rows.append(row)
                    print(json.dumps(row), flush=True)
        workspaces = _blas_workspaces(device)  # last: it frees what the codec's graphs were captured with
        for row in dtype_rows:
            row["blas_workspaces_gib"] = workspaces
        rows += dtype_rows
        del codec
        _free(device)
        if checks:
            _fidelity(args, device, checks)
    return rows


def _load(  # noqa: ANN202
    args: argparse.Namespace, device: str, dtype, decode_only: bool = False, compile: bool | None = None  # noqa: ANN001
):
    from codec.api import load_codec

    compile = args.compile if compile is None else compile
    budget = _budgets(args)[0]
    codec = load_codec(args.model, device=device, dtype=dtype, allow_untrained=True, compile=compile,
                       decode_memory_gib=budget, decode_only=decode_only,
                       decode_bytes_per_pixel=args.decode_bytes_per_pixel)  # fmt: skip
    codec.tiled_decode = True if args.tiled else None
    codec.decode_plan_kind = _plan_kinds(args)[0]
    return codec


def _budgets(args: argparse.Namespace) -> list[float | None]:
    """``--decode-memory-gib``'s budgets in GiB; None: the codec's default (4 GiB on CUDA)."""
    text = getattr(args, "decode_memory_gib", None)
    if text is None:
        return [None]
    if isinstance(text, (int, float)):
        return [float(text)]
    out: list[float | None] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part in ("default", "none"):
            out.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--decode-memory-gib takes GiB numbers or `default`, not {part!r}") from None
        if not value > 0:
            raise ValueError(f"--decode-memory-gib must be positive, got {part!r}")
        out.append(value)
    return out


def _loaded(codec, device: str) -> dict:  # noqa: ANN001
    """What the codec that decodes holds right after loading: allocated and reserved GiB (CUDA), and the
    bytes of its float64 entropy path (the originals' float32 weights, cast at each call)."""
    import torch

    path = codec.model.codec.entropy_path64()
    path_bytes = sum(t.numel() * t.element_size() for t in [*path.parameters(), *path.buffers()])
    row = {"entropy_path_gib": path_bytes / 2**30}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        row |= {"loaded_gib": torch.cuda.memory_allocated() / 2**30,
                "loaded_reserved_gib": torch.cuda.memory_reserved() / 2**30}  # fmt: skip
    return row


def _held(device: str) -> dict:
    """What stays between decodes (CUDA): allocated GiB (weights, graph outputs, cuBLAS workspaces), and
    the segments of the CUDA-graph pools (every pool but the default one), a replay's working memory."""
    import torch

    if not device.startswith("cuda"):
        return {}
    torch.cuda.synchronize()
    pools = sum(seg["total_size"] for seg in torch.cuda.memory_snapshot()
                if tuple(seg.get("segment_pool_id", (0, 0))) != (0, 0))  # fmt: skip
    return {"idle_gib": torch.cuda.memory_allocated() / 2**30, "graph_pools_gib": pools / 2**30}


def _blas_workspaces(device: str) -> float:
    """GiB of the cuBLAS workspaces the process holds (one per stream cuBLAS ran on), measured by freeing
    them: only once nothing captured will replay (graphs hold the capture stream's workspace)."""
    import torch

    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if not device.startswith("cuda") or clear is None:
        return float("nan")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    clear()
    torch.cuda.synchronize()
    return (before - torch.cuda.memory_allocated()) / 2**30


def _plan_kinds(args: argparse.Namespace) -> list[str | None]:
    """``--decode-plan``'s kinds (``codec.autoencoder.DECODE_PLANS``); [None]: the codec's default."""
    from codec.autoencoder import DECODE_PLANS

    text = getattr(args, "decode_plan", None)
    if not text:
        return [None]
    kinds = [k.strip() for k in text.split(",")]
    if bad := [k for k in kinds if k not in DECODE_PLANS]:
        raise ValueError(f"--decode-plan kinds are {DECODE_PLANS}, not {bad}")
    return kinds


def _empty_cache(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _free(device: str) -> None:
    """Free a deleted codec's GPU memory: collect it (its graph caches hold bound methods of it: a cycle
    that ``del`` alone leaves for the collector), drop the cuBLAS workspaces its graphs' warm-ups left,
    and empty the allocator's cache."""
    import gc

    gc.collect()
    _blas_workspaces(device)
    _empty_cache(device)


def _columns(
    kind: str, times: list[float], items: list, megapixels: float, peak: float, reserved: float
) -> dict:
    """One direction's columns (``kind`` = enc or dec): per-image latency p50/p99, images/s and
    megapixels/s of the batch, the entropy coder's ms per image, peak and reserved GiB."""
    batch, p50 = len(items), _pct(times, 50)
    return {
        f"{kind}_ms_p50": p50 / batch, f"{kind}_ms_p99": _pct(times, 99) / batch,
        f"{kind}_images_s": 1e3 * batch / p50, f"{kind}_mpx_s": 1e3 * batch * megapixels / p50,
        f"{kind}_entropy_ms": statistics.mean(it.entropy_ms for it in items),
        f"{kind}_peak_gib": peak, f"{kind}_reserved_gib": reserved,
    }  # fmt: skip


def _bench_encode(codec, images: list, quality: int, clock: _Clock, args, device: str) -> tuple[dict, list]:  # noqa: ANN001
    """The encode columns of one point, and its payloads."""
    encoded, enc_peak, enc_reserved = _peak(
        device, lambda: _timed(clock, codec.encode_items, (images, quality), args.warmup, args.repeats)
    )
    items, enc_times = encoded
    megapixels = images[0].width * images[0].height / 1e6
    row = _columns("enc", enc_times, items, megapixels, enc_peak, enc_reserved)
    row["enc_gpu_util_pct"] = clock.window_util()
    row["bpp"] = statistics.mean(it.bpp for it in items)
    return row, [it.payload for it in items]


def _bench_decode(  # noqa: ANN202
    codec, payloads: list[bytes], clock: _Clock, args, device: str, megapixels: float  # noqa: ANN001
):
    """The decode columns of one point, and (``--fidelity``) what the reference decode is checked against:
    the timed decodes' last pixels and the payloads' entropy-decoded latents, on the host."""
    batch = len(payloads)
    decoded, dec_peak, dec_reserved = _peak(
        device, lambda: _timed(clock, codec.decode_items, (payloads,), args.warmup, args.repeats)
    )
    dec_items, dec_times = decoded
    row = _columns("dec", dec_times, dec_items, megapixels, dec_peak, dec_reserved)
    row["dec_gpu_util_pct"] = clock.window_util()
    row["gpu_util_source"] = clock.monitor.backend if clock.monitor is not None else None
    row["dec_steady_peak_gib"] = _steady_peak(device, lambda: codec.decode_items(payloads))
    if batch == 1 and not args.no_stages:
        row.update(_stages(codec, payloads, clock, args.repeats))
    if not args.fidelity:
        return row, None
    pixels = [np.asarray(it.image) for it in dec_items]
    return row, (payloads, pixels, [_y_hat(codec, p).cpu() for p in payloads])


def _y_hat(codec, payload: bytes):  # noqa: ANN001, ANN202
    """The payload's entropy-decoded latent ``y_hat``, as the codec's decoder computes it (float64 path)."""
    from codec import bitstream
    from codec.model import PAD_MULTIPLE

    header, strings, _ = bitstream.unpack(payload)
    shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
    return codec.model.decompress_heads([strings], shape, header.quality)["y_hat"]


def _fidelity(args: argparse.Namespace, device: str, checks: list[tuple[dict, tuple]]) -> None:
    """``--fidelity``: decode every point's payloads with an fp32 eager decode-only codec, after the timed
    codec is freed (so that its peaks stay its own), and add to each row the PSNR of the timed path's
    pixels against the reference's (min and mean over the batch, dB on 0-255) and whether the latents
    are identical. The reference decodes whole where the device has room (a budget of 80 % of its free
    memory), else under that budget; ``fidelity_reference`` is the plan it used."""
    import torch

    from codec.api import load_codec
    from codec.metrics import psnr

    budget = None
    if device.startswith("cuda"):
        budget = 0.8 * torch.cuda.mem_get_info(torch.device(device))[0] / 2**30
    reference = load_codec(args.model, device=device, dtype=torch.float32, allow_untrained=True,
                           decode_only=True, decode_memory_gib=budget)  # fmt: skip
    for row, (payloads, pixels, latents) in checks:
        expected = [np.asarray(im) for im in reference.decode(payloads)]
        values = psnr(pixels, expected).double()
        pairs = zip(latents, payloads, strict=True)
        exact = all(torch.equal(a, _y_hat(reference, p).cpu()) for a, p in pairs)
        plan = reference.decode_plan(row["width"], row["height"], row["batch"])
        row.update(fidelity_psnr_db_min=float(values.min()), fidelity_psnr_db_mean=float(values.mean()),
                   fidelity_latents_exact=exact, fidelity_reference=plan.describe())  # fmt: skip
    del reference
    _free(device)


# --- cross-device export -----------------------------------------------------------------------
def export_payloads(model: str, device: str, out: Path, paths: list[Path]) -> None:
    """Encode photos (cut to 256x192) with every quality on ``device``; write payloads + decoded y_hat and
    pixels (``expected.npz``) so a CPU can check that it decodes the same latents (tools/check_decode.py)."""
    import torch

    from codec.api import load_codec

    codec = load_codec(model, device=device, allow_untrained=True)
    images = _photos(paths, 256, 192, len(paths))
    arrays, payload_files = {}, []
    for quality in codec.qualities:
        for i, payload in enumerate(codec.encode(images, quality)):
            name = f"{Path(model).stem}-q{quality}-{i}"
            (out / f"{name}.dtic").write_bytes(payload)
            arrays[f"{name}/y_hat"] = _y_hat(codec, payload).cpu().numpy()
            arrays[f"{name}/pixels"] = np.asarray(codec.decode([payload])[0])
            payload_files.append(name)
    np.savez_compressed(out / "expected.npz", **arrays)
    info = {"model": model, "model_id": codec.model_id, "device": _device_name(device),
            "torch": torch.__version__, "items": payload_files}  # fmt: skip
    (out / "expected.json").write_text(json.dumps(info, indent=1))
    print(f"exported {len(payload_files)} payloads of {model} ({codec.model_id}) to {out}")


# --- reporting ---------------------------------------------------------------------------------
def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def _write(rows: list[dict], out: Path, args: argparse.Namespace) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        return
    meta = {"device": _device_name(args.device or _default_device()), "date": datetime.now(UTC).isoformat(),
            "command": "ditic bench " + " ".join(_argv(args))}  # fmt: skip
    for row in rows:
        row.update(meta)
    pq.write_table(pa.Table.from_pylist(rows), out / f"bench-{args.mode}.parquet")
    (out / f"bench-{args.mode}.json").write_text(json.dumps(rows, indent=1))
    table = markdown_table(rows)
    (out / f"bench-{args.mode}.md").write_text(
        f"{meta['device']}, {meta['date']}\n\n`{meta['command']}`\n\n{table}"
    )
    print(table)
    plot = write_plot(rows, out / f"bench-{args.mode}.png", f"{meta['device']}, {meta['date'][:10]}")
    print(f"plot: {plot}" if plot else "no plots (matplotlib is not installed: pip install -e '.[eval]')")


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _argv(args: argparse.Namespace) -> list[str]:
    skip = {"command", "_module"}
    shown = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in vars(args).items()}
    return [f"--{k.replace('_', '-')}={v}" for k, v in shown.items() if k not in skip and v not in (None, "")]


COLUMNS = [("model", "model"), ("dtype", "dtype"), ("size", None), ("batch", "batch"),
           ("enc ms p50", "enc_ms_p50"), ("dec ms p50", "dec_ms_p50"), ("dec ms p99", "dec_ms_p99"),
           ("enc img/s", "enc_images_s"), ("dec img/s", "dec_images_s"),
           ("entropy / heads+DiT / DC-AE / to host ms", None), ("peak GiB enc/dec", None),
           ("steady dec GiB", None), ("reserved GiB enc/dec", None), ("dec MP/s", "dec_mpx_s"),
           ("coder ms enc/dec", None), ("GPU util % enc/dec", None)]  # fmt: skip


def markdown_table(rows: list[dict]) -> str:
    if "end_to_end_over_codec_only" in rows[0]:
        from jobs.bench_pipeline import pipeline_table

        return pipeline_table(rows)
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        cells = []
        for title, key in COLUMNS:
            if title == "size":
                kind = r.get("decode_plan_kind", "default")
                notes = [kind] if kind != "default" else []
                notes += [r["decode_budget"]] if "decode_budget" in r else []
                cells.append(f"{r['width']}x{r['height']}" + (f" ({', '.join(notes)})" if notes else ""))
            elif title.startswith("entropy"):
                parts = [r.get(k) for k in ("entropy_ms", "heads_dit_ms", "vae_decode_ms", "to_host_ms")]
                parts = parts if parts[-1] is not None else parts[:-1]  # rows from before session 17
                cells.append(" / ".join(f"{p:.1f}" for p in parts) if None not in parts else "")
            elif title.startswith("steady"):
                cells.append(f"{r.get('dec_steady_peak_gib', float('nan')):.2f}")
            elif title.startswith(("coder", "GPU util")):
                key = "entropy_ms" if title.startswith("coder") else "gpu_util_pct"
                enc, dec = r.get(f"enc_{key}", float("nan")), r.get(f"dec_{key}", float("nan"))
                cells.append(f"{enc:.1f} / {dec:.1f}" if enc == enc or dec == dec else "")
            elif title.startswith(("peak", "reserved")):
                kind = title.split()[0]
                enc, dec = r.get(f"enc_{kind}_gib", float("nan")), r.get(f"dec_{kind}_gib", float("nan"))
                cells.append(f"{enc:.2f} / {dec:.2f}")
            else:
                v = r[key]
                cells.append(f"{v:.1f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + _plan_notes(rows) + _fidelity_notes(rows)


def _fidelity_notes(rows: list[dict]) -> str:
    """``--fidelity``: one line per row, its pixels' PSNR against the fp32 eager decode and its latents."""
    notes = [
        f"- {r['model']} {r['dtype']} {r['width']}x{r['height']} batch {r['batch']}: PSNR against the fp32 "
        f"eager decode ({r['fidelity_reference']}) {r['fidelity_psnr_db_min']:.1f} dB min, "
        f"{r['fidelity_psnr_db_mean']:.1f} mean; entropy-decoded latents "
        + ("identical" if r["fidelity_latents_exact"] else "DIFFER")
        for r in rows if "fidelity_psnr_db_min" in r
    ]  # fmt: skip
    return "\nFidelity:\n" + "\n".join(notes) + "\n" if notes else ""


def _plan_notes(rows: list[dict]) -> str:
    """One line per row with a DC-AE tile plan: the plan, its estimated and measured peak."""
    notes = []
    for r in (r for r in rows if "decode_plan" in r):
        measured = (f", measured {r['dc_ae_peak_gib']:.2f} GiB ({r['dc_ae_bytes_per_px']:.0f} B/px) over "
                    f"{r['resident_gib']:.2f} GiB resident") if "dc_ae_peak_gib" in r else ""  # fmt: skip
        if "dc_ae_graph_pool_gib" in r:
            measured += f"; its CUDA-graph pool holds {r['dc_ae_graph_pool_gib']:.2f} GiB"
        if "loaded_gib" in r:
            nan = float("nan")
            measured += (f"; allocated {r['loaded_gib']:.2f} GiB after load (entropy path "
                         f"{r['entropy_path_gib']:.2f}), {r.get('idle_gib', nan):.2f} between decodes, "
                         f"graph pools {r.get('graph_pools_gib', nan):.2f}, cuBLAS workspaces "
                         f"{r.get('blas_workspaces_gib', nan):.2f}")  # fmt: skip
        kind = [r["decode_plan_kind"]] if r.get("decode_plan_kind", "default") != "default" else []
        kind += [r["decode_budget"]] if "decode_budget" in r else []
        label = f" ({', '.join(kind)})" if kind else ""
        notes.append(f"- {r['model']} {r['dtype']} DC-AE decode{label}: {r['decode_plan']}{measured}")
    return "\n" + "\n".join(notes) + "\n" if notes else ""
