"""Time the DC-AE decoder alone under the switches that may pay, on the GPU (issue 6).

    python tools/dcae_variants.py --sizes 1024x1024,2048x1152 --out /tmp/dcae

For ``ditic-official`` (seeded weights, bf16) and each size it times the decoder eager and compiled,
in NCHW and channels-last memory format, with cuDNN autotuning, and with ``torch.compile`` modes
(``max-autotune-no-cudagraphs`` only where ``--autotune``); each variant's output is compared with
the eager NCHW output (PSNR over [-1, 1]), so a faster variant that changes the picture shows. It
also writes the weights' bytes per module (what a decode-only model could leave off the GPU) and a
profiler table of the fastest compiled variant. Prints; writes ``results.json`` and ``profile.txt``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.api import load_codec  # noqa: E402


def _median_ms(fn, repeats: int, warmup: int = 2) -> float:  # noqa: ANN001
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item() / 4.0  # [-1, 1] -> [0, 1]
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def _module_bytes(model: torch.nn.Module) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, child in model.named_children():
        for sub, mod in child.named_children():
            out[f"{name}.{sub}"] = sum(p.numel() * p.element_size() for p in mod.parameters())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024x1024,2048x1152")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--autotune", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--out", type=Path, default=Path("out/dcae"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    codec = load_codec("ditic-official", device="cuda", dtype=torch.bfloat16, allow_untrained=True)
    model = codec.model
    results: dict = {
        "device": torch.cuda.get_device_name(),
        "module_bytes": _module_bytes(model),
        "allocated_after_load": torch.cuda.memory_allocated(),
        "rows": [],
    }
    codec.model.codec.entropy_path64()
    results["allocated_with_path64"] = torch.cuda.memory_allocated()
    eager = model.vae.decoder
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]

    def save() -> None:
        (args.out / "results.json").write_text(json.dumps(results, indent=1))

    variants = [
        ("eager", False, None, False),
        ("compile", False, "default", False),
        ("eager-cl", True, None, False),
        ("compile-cl", True, "default", False),
        ("compile-cl-cudnnbench", True, "default", True),
        ("compile-cl-reduce-overhead", True, "reduce-overhead", False),
    ]
    if args.autotune:
        variants.append(("compile-cl-max-autotune", True, "max-autotune-no-cudagraphs", False))
    if args.only:
        variants = [v for v in variants if v[0] in args.only.split(",")]
    best: tuple[float, str, object, torch.Tensor] | None = None
    with torch.no_grad():
        for w, h in sizes:
            z = torch.randn(1, 32, h // 32, w // 32, device="cuda", dtype=torch.bfloat16)
            reference = eager(z)
            for name, channels_last, mode, bench in variants:
                torch._dynamo.reset()
                torch.backends.cudnn.benchmark = bench
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                eager.to(memory_format=fmt)
                zin = z.contiguous(memory_format=fmt)
                fn = eager if mode is None else torch.compile(eager, mode=mode, dynamic=False)
                start = time.perf_counter()
                try:
                    out = fn(zin).clone()  # a CUDA-graph output is overwritten by the next replay
                    torch.cuda.synchronize()
                except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, not fatal
                    results["rows"].append({"size": f"{w}x{h}", "variant": name, "error": repr(exc)[:300]})
                    print(f"{w}x{h} {name}: failed {exc!r}"[:300], flush=True)
                    save()
                    continue
                first_s = time.perf_counter() - start
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                ms = _median_ms(lambda fn=fn, zin=zin: fn(zin), args.repeats)
                peak = torch.cuda.max_memory_allocated() - before
                row = {
                    "size": f"{w}x{h}",
                    "variant": name,
                    "ms": round(ms, 2),
                    "first_call_s": round(first_s, 1),
                    "peak_extra_gib": round(peak / 2**30, 3),
                    "psnr_vs_eager": round(_psnr(out, reference), 2),
                }
                results["rows"].append(row)
                print(row, flush=True)
                save()
                if mode is not None and (w, h) == sizes[0] and (best is None or ms < best[0]):
                    best = (ms, name, fn, zin)
            eager.to(memory_format=torch.contiguous_format)
        torch.backends.cudnn.benchmark = False
        if best is not None:
            from torch.profiler import ProfilerActivity, profile

            _, name, fn, zin = best
            eager.to(memory_format=torch.channels_last if "-cl" in name else torch.contiguous_format)
            for _ in range(2):
                fn(zin)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    fn(zin)
                torch.cuda.synchronize()
            table = prof.key_averages().table(
                sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=90
            )
            (args.out / "profile.txt").write_text(f"# {name} at {sizes[0]}, 3 runs\n{table}\n")
            print(table[:6000], flush=True)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
