"""Where a whole decode's time goes beyond its stages' (issue 6, session 18). GPU tool; CPU to try it out.

    python tools/decode_gap.py --model ditic-official --size 2048 --gib 2 --out gap/

``ditic bench``'s stage columns (entropy, heads + DiT, DC-AE, to host) are medians of separate passes; in
session 17 their sum fell 39 ms short of the whole decode at 2048². Here one decode-only compiled codec
(random weights) decodes one real photo's payload (encoded by an eager codec), and each repeat times the
whole ``decode_items`` and then the four stage passes (``jobs.bench._stages``), alternating, so both see
the same state. Then one whole decode runs under torch.profiler: the host and device time of its
``decode.*`` ranges (``Codec._decode_batch``), and the top operators by host time and by device time.
Writes ``gap.json`` and ``profile-*.txt`` in ``--out``.

The CUDA caching allocator runs with ``ditic``'s default (``jobs.cli.ALLOCATOR_DEFAULTS``: expandable
segments), as ``ditic bench`` does, unless ``--plain-allocator`` (or the caller's own
``PYTORCH_CUDA_ALLOC_CONF``). Session 18's call 5 ran before this default was applied here, i.e. with the
plain allocator: 128.5 ms, against 137-138 ms from ``ditic bench`` on the same code and card.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.api import load_codec  # noqa: E402
from jobs import bench  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _payload(model: str, device: str, dtype: torch.dtype, size: int) -> bytes:
    encoder = load_codec(model, device=device, dtype=dtype, allow_untrained=True)
    photo = bench._photos(bench._photo_paths(None), size, size, 1)
    payload = encoder.encode(photo, max(encoder.qualities))[0]
    del encoder
    bench._free(device)
    return payload


def _profile(codec, payloads: list[bytes], out: Path, device: str) -> dict:  # noqa: ANN001
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        codec.decode_items(payloads)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    events = prof.key_averages()
    attr = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
    (out / "profile-host.txt").write_text(events.table(sort_by="cpu_time_total", row_limit=40,
                                                       max_name_column_width=90))  # fmt: skip
    (out / "profile-device.txt").write_text(events.table(sort_by="self_" + attr, row_limit=40,
                                                         max_name_column_width=90))  # fmt: skip
    cuda = torch.autograd.DeviceType.CUDA
    ranges = {e.key: {"host_ms": e.cpu_time_total / 1e3, "device_ms": getattr(e, attr) / 1e3}
              for e in events if e.key.startswith("decode.") and e.device_type != cuda}  # fmt: skip
    kernels = sum(
        getattr(e, "self_" + attr) for e in events if e.device_type == cuda and "decode." not in e.key
    )
    return {"ranges": ranges, "kernels_device_ms": kernels / 1e3}


ENTROPY_PARTS = (  # (label, owner, method): the pieces of LatentCodec.decompress_latent, in call order
    ("z", "codec.entropy.models:EntropyBottleneck", "decompress"),
    ("hyper", "codec.latent:EntropyPath", "hyper"),
    ("params", "codec.latent:EntropyPath", "params"),
    ("levels", "codec.entropy.coding:StepPositions", "levels"),
    ("gather", "codec.entropy.coding:StepPositions", "gather"),
    ("coder", "codec.entropy.coding:GaussianStreamDecoder", "decode_levels"),
    ("coder_numpy", "codec.entropy.coding:GaussianStreamDecoder", "decode_batch"),
    ("place", "codec.entropy.coding:StepPositions", "place"),
    ("scatter", "codec.entropy.coding:StepPositions", "scatter"),
    ("refine", "codec.latent:EntropyPath", "refine"),
)


def _entropy_parts(codec, payloads: list[bytes], device: str, repeats: int) -> dict:  # noqa: ANN001
    """Median ms per entropy decode of each piece of ``decompress_latent`` (summed over its context steps),
    each timed with the device synchronised before and after, beside the whole call timed the same way;
    ``rest`` is what the pieces leave (the steps' elementwise updates, finish, Python)."""
    import importlib

    from codec import bitstream
    from codec.model import PAD_MULTIPLE

    clock = bench._Clock(device)
    totals: dict[str, float] = {}
    saved = []
    for label, owner, name in ENTROPY_PARTS:
        module, cls = owner.split(":")
        klass = getattr(importlib.import_module(module), cls)
        fn = klass.__dict__[name]
        inner = fn.__func__ if isinstance(fn, staticmethod) else fn

        def timed(*args, _inner=inner, _label=label, **kwargs):  # noqa: ANN002, ANN003, ANN202
            result, ms = clock(lambda: _inner(*args, **kwargs))
            totals[_label] = totals.get(_label, 0.0) + ms
            return result

        saved.append((klass, name, fn))
        setattr(klass, name, staticmethod(timed) if isinstance(fn, staticmethod) else timed)
    header, strings, _ = bitstream.unpack(payloads[0])
    shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
    runs: list[dict[str, float]] = []
    try:
        for _ in range(repeats + 1):
            totals.clear()
            with torch.no_grad():
                _, ms = clock(codec.model.decompress_latent, [strings], shape, header.quality)
            runs.append(dict(totals, whole=ms, rest=ms - sum(totals.values())))
    finally:
        for klass, name, fn in saved:
            setattr(klass, name, fn)
    keys = [k for k in ("whole", *(p[0] for p in ENTROPY_PARTS), "rest") if k in runs[-1]]
    return {k: statistics.median(r[k] for r in runs[1:]) for k in keys} | _coder_alone(
        codec, strings, shape, header.quality, repeats
    )


def _coder_alone(codec, strings: list[bytes], shape: tuple, quality: int, repeats: int) -> dict:  # noqa: ANN001
    """The y stream's range decoding alone, replayed back to back from one decode's table levels (no
    network between the steps): the host's floor for ``coder``; the difference is what running between
    GPU work costs the same numpy and range-coder calls (cold caches, first touches)."""
    from codec.entropy.coding import GaussianStreamDecoder

    gc = codec.model.codec.gaussian_conditional
    steps: list[np.ndarray] = []
    decode_levels = GaussianStreamDecoder.__dict__["decode_levels"]

    def keep(decoders, levels, out=None):  # noqa: ANN001, ANN202
        steps.append(np.array(levels))
        return decode_levels.__func__(decoders, levels, out)

    GaussianStreamDecoder.decode_levels = staticmethod(keep)
    try:
        with torch.no_grad():
            codec.model.decompress_latent([strings], shape, quality)
    finally:
        GaussianStreamDecoder.decode_levels = decode_levels
    if not steps:
        return {}
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        decoders = [gc.stream_decoder(strings[1])]
        for levels in steps:
            GaussianStreamDecoder.decode_levels(decoders, levels)
        decoders[0].finish()
        times.append((time.perf_counter() - start) * 1e3)
    return {"coder_alone": statistics.median(times[1:])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ditic-official")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--gib", type=float, default=2.0, help="the DC-AE decode budget")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("out/decode-gap"))
    parser.add_argument("--plain-allocator", action="store_true",
                        help="the caching allocator's defaults, not ditic's expandable segments")  # fmt: skip
    args = parser.parse_args()
    if not args.plain_allocator:
        from jobs.cli import allocator_defaults

        allocator_defaults()  # before CUDA allocates anything
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = DTYPES[args.dtype]
    args.out.mkdir(parents=True, exist_ok=True)
    payloads = [_payload(args.model, device, dtype, args.size)]
    codec = load_codec(args.model, device=device, dtype=dtype, allow_untrained=True, compile=True,
                       decode_only=True, decode_memory_gib=args.gib)  # fmt: skip
    clock = bench._Clock(device)
    for _ in range(2):  # warm-up: compiles, graph captures (the stage passes' first call compiles too)
        codec.decode_items(payloads)
        bench._stages(codec, payloads, clock, 1)
    whole, stages = [], []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.repeats):
        whole.append(clock(codec.decode_items, payloads)[1])
        stages.append(bench._stages(codec, payloads, clock, 1))
    memory = {}
    if device.startswith("cuda"):
        memory = {"peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
                  "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}  # fmt: skip
    keys = ("entropy_ms", "heads_dit_ms", "vae_decode_ms", "to_host_ms")
    row = {"model": args.model, "size": args.size, "gib": args.gib, "dtype": args.dtype,
           "device": bench._device_name(device), "plan": codec.decode_plan(args.size, args.size).describe(),
           "allocator": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"),
           "whole_ms": whole, "whole_ms_p50": statistics.median(whole)} | memory  # fmt: skip
    for key in keys:
        row[key] = statistics.median(s[key] for s in stages)
    row["stage_sum_ms"] = sum(row[k] for k in keys)
    row["gap_ms"] = row["whole_ms_p50"] - row["stage_sum_ms"]
    row["entropy_parts_ms"] = _entropy_parts(codec, payloads, device, args.repeats)
    row["profile"] = _profile(codec, payloads, args.out, device)
    (args.out / "gap.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
