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
* ``host cpu ms``: the same segments in CPU time of the calling thread (``time.thread_time``): on a
  loaded machine wall times include waiting for a core; this does not. Use ``--threads 1`` to compare
  code versions (torch ops may otherwise run part of the work on other threads, uncounted).

Then a cProfile of exactly those segments (the networks are left out), top functions by own time.

``--statistics``: an untrained ``ditic-official`` puts every scale below the first table level (one
table, ~0.2% escapes), unlike a trained model (the embedded ``ditic-small`` on a photo: ~30 tables in
use, no escapes, scales ~0.14-14). ``trained-like`` (the default) keeps the networks running but
replaces their means and scales by seeded draws of that kind (scales log-normal, median 1.5, 1-99%
0.15-15; means normal, std 2) and y by means + scale * noise, so the coder does a trained model's work;
``untrained`` codes what the random networks give.
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
from codec.latent import EntropyPath, four_step_masks  # noqa: E402
from codec.model import LatentCodec  # noqa: E402


class CoderMeter:
    """Hooks ``LatentCodec._timed`` and each context step's coding callback: host time + profile."""

    def __init__(self) -> None:
        self.profile = cProfile.Profile()
        self.profiling = False
        self.host_seconds = self.host_cpu_seconds = 0.0
        self._depth = 0
        self._start = self._start_cpu = 0.0

    def enter(self) -> None:
        self._depth += 1
        if self._depth == 1:
            if self.profiling:
                self.profile.enable()
            self._start, self._start_cpu = time.perf_counter(), time.thread_time()

    def leave(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.host_seconds += time.perf_counter() - self._start
            self.host_cpu_seconds += time.thread_time() - self._start_cpu
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


class TrainedLike:
    """Replaces the parameter networks' means/scales and y by draws with a trained model's statistics."""

    def __init__(self, seed: int) -> None:
        self.seed, self._draws = seed, {}

    def draws(self, k: int, shape: torch.Size, device: torch.device) -> tuple[torch.Tensor, ...]:
        if (k, shape) not in self._draws:
            g = torch.Generator().manual_seed(self.seed * 10 + k)
            scales = torch.exp(
                torch.randn(shape, generator=g, dtype=torch.float64) + torch.log(torch.tensor(1.5))
            )
            means = 2 * torch.randn(shape, generator=g, dtype=torch.float64)
            noise = torch.randn(shape, generator=g, dtype=torch.float64)
            self._draws[(k, shape)] = (means, scales, noise)
        return tuple(t.to(device) for t in self._draws[(k, shape)])

    def install(self) -> None:
        analysis, params, fake = LatentCodec.analysis, EntropyPath.params, self

        def fake_params(path, k, base):  # noqa: ANN001, ANN202
            params(path, k, base)  # the networks still run; their output is replaced
            return fake.draws(k, base.shape, base.device)[:2]

        def fake_analysis(codec, latent, aux, quality):  # noqa: ANN001, ANN202
            y, z = analysis(codec, latent, aux, quality)
            masks = four_step_masks(y.shape[1], *y.shape[-2:], y.device, torch.float64)
            y_like = sum(
                m * (mu + s * e)
                for k, m in enumerate(masks)
                for mu, s, e in [fake.draws(k, y.shape, y.device)]
            )
            return y_like.to(y.dtype), z

        LatentCodec.analysis, EntropyPath.params = fake_analysis, fake_params


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
    names = ("enc_coding", "enc_host", "enc_cpu", "dec_coding", "dec_host", "dec_cpu")
    times: dict[str, list[float]] = {k: [] for k in names}
    strings = None
    for i in range(repeats + 1):  # the first run warms up (float64 path copy, tables)
        meter.host_seconds = meter.host_cpu_seconds = 0.0
        strings, y_hat = codec.compress(latent, aux, quality)
        enc = (codec.coding_seconds, meter.host_seconds, meter.host_cpu_seconds)
        meter.host_seconds = meter.host_cpu_seconds = 0.0
        out = codec.decompress(strings, y_size, quality, torch.device("cpu"), torch.float32)
        dec = (codec.coding_seconds, meter.host_seconds, meter.host_cpu_seconds)
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
    y_size = (latent.shape[-2] // 2, latent.shape[-1] // 2)
    codec.decompress(strings, y_size, quality, torch.device("cpu"), torch.float32)
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
    parser.add_argument("--statistics", choices=("trained-like", "untrained"), default="trained-like")
    parser.add_argument("--levels-in-torch", action="store_true",
                        help="decode as on a GPU: table levels and y_hat in torch beside the scales "
                             "(LatentCodec.levels_on_device), the coder gets int32 levels")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    meter = CoderMeter()
    meter.install()
    if args.statistics == "trained-like":
        TrainedLike(args.seed).install()
    codec = build(args.model, args.seed)
    codec.levels_on_device = args.levels_in_torch or None
    print(
        f"{args.model} ({args.statistics} statistics{', levels in torch' if args.levels_in_torch else ''}), "
        f"batch {args.batch}, quality {args.quality}, "
        f"torch threads {args.threads}, median of {args.repeats}; ms per call"
    )
    print("size | y symbols | bytes (sha256) | enc: coding, host, host cpu | dec: coding, host, host cpu")
    profiles = []
    for text in args.sizes.split(","):
        size = tuple(int(v) for v in text.lower().split("x"))
        latent, aux = inputs(args.model, size, args.batch, args.seed)
        r = measure(codec, meter, latent, aux, args.quality, args.repeats)
        print(
            f"{text} | {r['symbols']} | {r['bytes']} ({r['digest']}) | {r['enc_coding']:.2f}, "
            f"{r['enc_host']:.2f}, {r['enc_cpu']:.2f} | {r['dec_coding']:.2f}, {r['dec_host']:.2f}, "
            f"{r['dec_cpu']:.2f}",
            flush=True,
        )
        if args.top:
            profiles.append((text, profile(codec, meter, latent, aux, args.quality, args.top)))
    for text, report in profiles:
        print(f"\n--- cProfile, coder side only, {text}, one encode + one decode ---\n{report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
