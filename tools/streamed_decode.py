"""The DC-AE decode alone under a memory budget, by plan kind: the streamed split against blended tiles,
and the streamed split's exactness (session 9, issue 6). GPU tool; the CPU only to try it out.

    python tools/streamed_decode.py --model ditic-official --out streamed.json \\
        --exact 1024 --points 2048:1:auto,2048:1:tiles,4096:4:auto,4096:2:auto

One decode-only codec (bf16 unless --dtype, ``compile=True`` unless --eager, random weights), random
latents (seeded; the decoder's memory and time do not depend on the values). ``--exact S``: at S² the
codec's compiled streamed split (its decode forced past a budget of 0.6 of the whole decode's
estimate) against the fp32 eager whole decode of the same latent: PSNR on [-1, 1] images and max abs
diff, and the fp32 eager streamed split against the fp32 whole (max abs diff). ``--points``
SIZE:GIB:KIND: the plan, its estimate, the first call (compiles), the median of ``--repeats`` calls
and the peak allocated over what was resident (CUDA), per point; ``--profile``: one more decode per
point under torch.profiler, with the split's global and local parts' device times (``dcae.split.*``)
and the top kernels (``profiles/*.txt`` beside ``--out``). Prints JSON lines, writes ``--out``
(JSON) and beside it a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import autoencoder  # noqa: E402
from codec.api import load_codec  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _latent(codec, size: int, seed: int = 0) -> torch.Tensor:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, codec.config.vae.latent_channels, size // 32, size // 32, generator=g)
    return z.to(codec.device, codec.dtype)


def _decode(codec, z: torch.Tensor, gib: float, kind: str) -> torch.Tensor:  # noqa: ANN001
    return autoencoder.decode_latent(codec.model.vae, z, True, budget_bytes=gib * autoencoder.GIB, kind=kind)


def point(codec, size: int, gib: float, kind: str, repeats: int, profile_dir: Path | None = None
          ) -> dict:  # noqa: ANN001
    z = _latent(codec, size)
    vae, dev = codec.model.vae, codec.device
    plan = autoencoder.plan_for(vae, z, True, budget_bytes=gib * autoencoder.GIB, kind=kind)
    row = {"size": size, "budget_gib": gib, "kind": kind, "plan": plan.describe(),
           "est_gib": plan.estimated_bytes / autoencoder.GIB}  # fmt: skip
    with torch.no_grad():
        _sync(dev)
        start = time.perf_counter()
        _decode(codec, z, gib, kind)
        _sync(dev)
        row["first_s"] = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            _sync(dev)
            start = time.perf_counter()
            _decode(codec, z, gib, kind)
            _sync(dev)
            times.append((time.perf_counter() - start) * 1e3)
        row["ms_p50"] = statistics.median(times)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            resident = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            _decode(codec, z, gib, kind)
            _sync(dev)
            row["peak_over_resident_gib"] = (torch.cuda.max_memory_allocated() - resident) / autoencoder.GIB
            row["peak_total_gib"] = torch.cuda.max_memory_allocated() / autoencoder.GIB
            row["reserved_gib"] = torch.cuda.max_memory_reserved() / autoencoder.GIB
            row["resident_gib"] = resident / autoencoder.GIB
        if profile_dir is not None:
            row.update(_profile(codec, z, gib, kind, profile_dir / f"{size}-{gib:g}-{kind}.txt"))
    return row


def _profile(codec, z: torch.Tensor, gib: float, kind: str, path: Path) -> dict:  # noqa: ANN001
    """One more decode under torch.profiler: the device and host time of the split's global and local
    parts (``dcae.split.*`` labels: the host-side range, whose device total is its kernels'; the profiler
    also lists a device-side copy of each range whose total is not), and of every kernel; the top kernels
    go to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if codec.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _decode(codec, z, gib, kind)
        _sync(codec.device)
    events = prof.key_averages()
    attr = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
    cuda = torch.autograd.DeviceType.CUDA
    ranges = [e for e in events if e.key.startswith("dcae.split.") and e.device_type != cuda]
    kernels = [e for e in events if e.device_type == cuda and not e.key.startswith("dcae.split.")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(events.table(sort_by=attr, row_limit=30, max_name_column_width=90))
    out = {}
    for e in ranges:
        part = e.key.removeprefix("dcae.split.")
        out[f"{part}_device_ms"], out[f"{part}_host_ms"] = getattr(e, attr) / 1e3, e.cpu_time_total / 1e3
    out["kernels_device_ms"] = sum(getattr(e, "self_" + attr) for e in kernels) / 1e3
    out["kernel_launches"] = sum(e.count for e in kernels)
    return out


def exactness(codec, size: int) -> dict:  # noqa: ANN001
    """The codec's split (compiled where it is) against the fp32 eager whole decode of the same latent."""
    vae, dev = codec.model.vae, codec.device
    z = _latent(codec, size, seed=1)
    whole_plan = autoencoder.plan_for(vae, z, False)
    gib = 0.6 * whole_plan.estimated_bytes / autoencoder.GIB  # past the whole decode: the split
    plan = autoencoder.plan_for(vae, z, True, budget_bytes=gib * autoencoder.GIB, kind="split")
    with torch.device(dev):  # built where it runs (no slow CPU init); freed when this returns
        reference = autoencoder.build_vae(codec.config).decoder.eval()
    reference.load_state_dict(vae.decoder.state_dict())  # the codec's (bf16-rounded) weights, in fp32
    with torch.no_grad():
        split = _decode(codec, z, gib, "split").float()
        whole = reference(z.float())
        rz = z.float()
        spec = autoencoder.split_spec(reference, torch.float32)
        rows = rz.shape[-2] * 32 // spec.scale
        starts = tuple(k * rows // 3 for k in range(3))
        fp32_plan = autoencoder.SplitPlan(tuple(rz.shape[-2:]), 1, spec, starts, 1, 1.0, 4, 4)
        fp32_split = autoencoder.run_plan(reference, rz, fp32_plan)
        thirds = autoencoder._carry_starts(rows, 3, spec.halo)
        carried = autoencoder.SplitPlan(tuple(rz.shape[-2:]), 1, spec, thirds, 1, 1.0, 4, 4, carry=True)
        fp32_carried = autoencoder.run_plan(reference, rz, carried)
    a, b = split.clamp(-1, 1), whole.clamp(-1, 1)
    mse = float(((a - b) / 2).pow(2).mean())
    return {"size": size, "plan": plan.describe(), "dtype": str(codec.dtype).removeprefix("torch."),
            "compiled": getattr(vae.decoder, "_compiled_call_impl", None) is not None,
            "psnr_vs_fp32_whole_db": 10 * math.log10(1 / mse) if mse else math.inf,
            "max_abs_vs_fp32_whole": float((split - whole).abs().max()),
            "fp32_eager_streamed_max_abs": float((fp32_split - whole).abs().max()),
            "fp32_eager_streamed_plan": fp32_plan.describe(),
            "fp32_eager_carried_max_abs": float((fp32_carried - whole).abs().max())}  # fmt: skip


def _markdown(rows: list[dict]) -> str:
    lines = ["| point | plan | est GiB | first s | ms p50 | peak over resident GiB | total / reserved GiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        if "error" in r:
            cells = [f"{r['size']}² {r['budget_gib']} GiB {r['kind']}", r["error"], "", "", "", "", ""]
        elif "kind" in r:
            peak, total, reserved = (r.get(k, math.nan) for k in ("peak_over_resident_gib", "peak_total_gib",
                                                                  "reserved_gib"))  # fmt: skip
            point = f"{r['size']}² {r['budget_gib']} GiB {r['kind']}"
            cells = [point, r["plan"], f"{r['est_gib']:.2f}", f"{r['first_s']:.1f}", f"{r['ms_p50']:.1f}",
                     f"{peak:.2f}", f"{total:.2f} / {reserved:.2f}"]  # fmt: skip
        else:
            cells = [f"exactness {r['size']}²", r["plan"],
                     f"PSNR {r['psnr_vs_fp32_whole_db']:.1f} dB, max abs {r['max_abs_vs_fp32_whole']:.3g}; "
                     f"fp32 eager streamed max abs {r['fp32_eager_streamed_max_abs']:.2g}, carried "
                     f"{r.get('fp32_eager_carried_max_abs', math.nan):.2g}", "", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ditic-official")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--eager", action="store_true", help="no torch.compile")
    parser.add_argument("--device", default=None)
    parser.add_argument("--exact", type=int, default=0, metavar="SIZE")
    parser.add_argument("--points", default="", help="comma-separated SIZE:GIB:KIND")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("out/streamed-decode.json"))
    parser.add_argument("--profile", action="store_true",
                        help="one more decode per point under torch.profiler: region and kernel times")
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    codec = load_codec(args.model, device=device, dtype=dtype, allow_untrained=True, compile=not args.eager,
                       decode_only=True)  # fmt: skip
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def keep(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=1))
        args.out.with_suffix(".md").write_text(f"{name}, torch {torch.__version__}\n\n{_markdown(rows)}")

    if args.exact:
        keep(exactness(codec, args.exact))
    for text in filter(None, args.points.split(",")):
        size, gib, kind = text.split(":")
        try:
            keep(point(codec, int(size), float(gib), kind, args.repeats,
                       args.out.parent / "profiles" if args.profile else None))  # fmt: skip
        except Exception as error:  # noqa: BLE001 - a point that does not fit (or fails) must not end the run
            keep({"size": int(size), "budget_gib": float(gib), "kind": kind, "error": repr(error)[:300]})
            if device == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
