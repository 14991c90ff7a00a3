"""Profile one image through the codec's stages with torch.profiler: where the milliseconds go.

    python tools/profile_codec.py --model ditic-official --size 1024x1024 --dtype bf16 --out /tmp/prof

Per stage (encoder: DC-AE + ELIC analysis, latent-codec compress; decoder: entropy decoding + heads,
DiT step, DC-AE decode) it writes the top operators by device time and by host time, and prints the
median wall time of a few plain runs (device synchronised) beside a few switches that may pay:
cuDNN autotuning and channels-last DC-AE. Used on the GPU machine for issue 6; prints, writes text.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import bitstream  # noqa: E402
from codec.api import load_codec  # noqa: E402
from codec.model import PAD_MULTIPLE  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_ms(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _profile(name: str, fn: Callable[[], object], out: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        fn()
    _sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            fn()
        _sync()
    averages = prof.key_averages()
    device_key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    text = (
        f"# {name}: 3 runs\n\n## by device time\n{averages.table(sort_by=device_key, row_limit=25)}\n\n"
        f"## by host time\n{averages.table(sort_by='self_cpu_time_total', row_limit=25)}\n"
    )
    (out / f"{name}.txt").write_text(text)
    print(f"--- {name}\n{averages.table(sort_by=device_key, row_limit=12)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ditic-official")
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("out/profile"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.split("x"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    codec = load_codec(args.model, device=args.device, dtype=dtype, allow_untrained=True)
    photo = ImageOps.fit(Image.open(sorted(PHOTOS.glob("*.jpg"))[0]).convert("RGB"), (width, height))
    quality = max(codec.qualities)
    payload = codec.encode([np.asarray(photo)], quality)[0]
    header, strings, _ = bitstream.unpack(payload)
    shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
    model = codec.model
    x = codec._to_device([codec_prepared(photo)])
    heads = model.decompress_heads([strings], shape, quality)
    latent_hat, _ = model.synthesize(heads)
    stages: dict[str, Callable[[], object]] = {
        "encode_latent": lambda: model.encode_latent(x),
        "encode_all": lambda: model.compress(x, quality),
        "entropy_heads": lambda: model.decompress_heads([strings], shape, quality),
        "dit": lambda: model.synthesize(heads),
        "vae_decode": lambda: model.decode_pixels(latent_hat),
        "decode_all": lambda: model.decompress([strings], shape, quality),
        "dit_graphed": lambda: codec._dit_step(heads["mean"], heads["scale"], heads["res"], heads["prompt"]),
        "codec_decode": lambda: codec.decode_items([payload]),
        "codec_encode": lambda: codec.encode_items([np.asarray(photo)], quality),
    }
    with torch.no_grad():
        for name, fn in stages.items():
            print(f"{name}: {_median_ms(fn):.1f} ms (median of 5)", flush=True)
        for name, fn in stages.items():
            if name not in ("encode_all", "decode_all", "codec_decode", "codec_encode"):
                _profile(name, fn, args.out)
        _variants(model, latent_hat, stages)
    return 0


def codec_prepared(photo: Image.Image):  # noqa: ANN201
    from codec.image import prepare

    return prepare(np.asarray(photo))


def _variants(model, latent_hat: torch.Tensor, stages: dict[str, Callable[[], object]]) -> None:  # noqa: ANN001
    """Switches that may pay, each timed against the plain run just before it."""
    print("variants (median ms):", flush=True)
    torch.backends.cudnn.benchmark = True
    for name in ("dit", "vae_decode", "decode_all"):
        print(f"  cudnn.benchmark {name}: {_median_ms(stages[name]):.1f}", flush=True)
    if os.environ.get("PROFILE_COMPILE") == "1":
        eager = model.vae.decoder
        model.vae.decoder = torch.compile(eager)
        start = time.perf_counter()
        model.decode_pixels(latent_hat)
        print(f"  torch.compile vae decoder: first call {time.perf_counter() - start:.0f} s", flush=True)
        print(f"  + torch.compile vae_decode: {_median_ms(stages['vae_decode']):.1f}", flush=True)
        model.vae.decoder = eager


if __name__ == "__main__":
    raise SystemExit(main())
