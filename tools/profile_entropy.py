"""Time the host-side (CPU, Python) entropy-coding work of the latent codec, on the CPU.

    python tools/profile_entropy.py --model ditic-official --sizes 1024x1024,2048x2048 --repeats 5

Builds the configuration's ``LatentCodec`` alone (seeded, untrained: the DC-AE, DiT and ELIC are not
needed to feed it; random latents and aux features of the right shapes stand in for them) and runs
``compress`` and ``decompress`` on one image per size. Two numbers per direction, medians over the
repeats after one warm-up run:

* ``coding ms``: ``LatentCodec.coding_seconds``, what the codec reports as entropy time (the calls it
  wraps in ``_timed``: z coding, the per-step range coder calls, the final flush/check);
* ``host ms``: everything the coder side costs the host, i.e. ``coding ms`` plus the glue around
  each context step (slicing masked positions out, scattering results back, device transfers). On a
  GPU this is the time the host spends between two parameter-network replays.

Then a cProfile of exactly those segments (the networks are left out), top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.config import get_config  # noqa: E402
from codec.latent import EntropyPath  # noqa: E402
from codec.model import LatentCodec  # noqa: E402


class CoderMeter:
    """Hooks ``LatentCodec._timed`` and each context step's coding callback: host time + profile."""

    def __init__(self) -> None:
        self.profile = cProfile.Profile()
        self.profiling = False
        self.host_seconds = 0.0
        self._depth = 0
        self._start = 0.0

    def enter(self) -> None:
        self._depth += 1
        if self._depth == 1:
            if self.profiling:
                self.profile.enable()
            self._start = time.perf_counter()

    def leave(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.host_seconds += time.perf_counter() - self._start
            if self.profiling:
                self.profile.disable()

    def install(self) -> None:
        meter, timed, run = self, LatentCodec._timed, EntropyPath.run

        def timed_hook(codec, fn, *args):  # noqa: ANN001, ANN202
            meter.enter()
            try:
                return timed(codec, fn, *args)
            finally:
                meter.leave()

        def run_hook(path, z_hat, y_size, code_step):  # noqa: ANN001, ANN202
            def step(*args):  # noqa: ANN002, ANN202
                meter.enter()
                try:
                    return code_step(*args)
                finally:
                    meter.leave()

            return run(path, z_hat, y_size, step)

        LatentCodec._timed, EntropyPath.run = timed_hook, run_hook


def build(model: str, seed: int) -> LatentCodec:
    torch.manual_seed(seed)
    codec = LatentCodec(get_config(model)).eval().requires_grad_(False)
    codec.entropy_bottleneck.update(force=True)
    codec.gaussian_conditional.update(force=True)
    return codec


def inputs(model: str, size: tuple[int, int], batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = get_config(model)
    h, w = size
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch, cfg.vae.latent_channels, h // 32, w // 32, generator=g)
    aux = torch.randn(batch, cfg.aux.M, h // 16, w // 16, generator=g)
    return latent, aux


def measure(codec: LatentCodec, meter: CoderMeter, latent, aux, quality: int, repeats: int) -> dict:  # noqa: ANN001
    y_size = (latent.shape[-2] // 2, latent.shape[-1] // 2)
    times: dict[str, list[float]] = {k: [] for k in ("enc_coding", "enc_host", "dec_coding", "dec_host")}
    strings = None
    for i in range(repeats + 1):  # the first run warms up (float64 path copy, tables)
        meter.host_seconds = 0.0
        strings, y_hat = codec.compress(latent, aux, quality)
        enc = (codec.coding_seconds, meter.host_seconds)
        meter.host_seconds = 0.0
        out = codec.decompress(strings, y_size, quality, torch.device("cpu"), torch.float32)
        dec = (codec.coding_seconds, meter.host_seconds)
        if not torch.equal(out["y_hat"], y_hat):
            raise SystemExit("decoded latents differ from the encoder's")
        if i:
            for key, value in zip(times, (*enc, *dec), strict=True):
                times[key].append(value * 1e3)
    result = {k: statistics.median(v) for k, v in times.items()}
    result["bytes"] = sum(len(s) for item in strings for s in item)
    result["digest"] = hashlib.sha256(b"".join(s for item in strings for s in item)).hexdigest()[:12]
    result["symbols"] = codec.M * y_size[0] * y_size[1] * latent.shape[0]
    return result


def profile(codec: LatentCodec, meter: CoderMeter, latent, aux, quality: int, top: int) -> str:  # noqa: ANN001
    meter.profile, meter.profiling = cProfile.Profile(), True
    strings, _ = codec.compress(latent, aux, quality)
    codec.decompress(strings, (latent.shape[-2] // 2, latent.shape[-1] // 2), quality, torch.device("cpu"), torch.float32)
    meter.profiling = False
    text = io.StringIO()
    pstats.Stats(meter.profile, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ditic-official")
    parser.add_argument("--sizes", default="1024x1024,2048x2048", help="HxW list, multiples of 64")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--quality", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=20, help="cProfile rows (0: no profile)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the networks)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    meter = CoderMeter()
    meter.install()
    codec = build(args.model, args.seed)
    print(f"{args.model}, batch {args.batch}, quality {args.quality}, median of {args.repeats}; ms per call")
    print("size | y symbols | bytes (sha256) | enc coding | enc host | dec coding | dec host")
    profiles = []
    for text in args.sizes.split(","):
        size = tuple(int(v) for v in text.lower().split("x"))
        latent, aux = inputs(args.model, size, args.batch, args.seed)
        r = measure(codec, meter, latent, aux, args.quality, args.repeats)
        print(
            f"{text} | {r['symbols']} | {r['bytes']} ({r['digest']}) | {r['enc_coding']:.2f} | {r['enc_host']:.2f} | "
            f"{r['dec_coding']:.2f} | {r['dec_host']:.2f}",
            flush=True,
        )
        if args.top:
            profiles.append((text, profile(codec, meter, latent, aux, args.quality, args.top)))
    for text, report in profiles:
        print(f"\n--- cProfile, coder side only, {text}, one encode + one decode ---\n{report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
