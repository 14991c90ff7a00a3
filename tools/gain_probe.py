"""What finer quantization of y would buy at one quality: the top of the rate curve, probed on the CPU.

    DITIC_STLPIPS_DIR=.carry/stlpips-alex OMP_NUM_THREADS=2 python tools/gain_probe.py ditic-small \\
        --data .carry/train --quality 4 --factors 1,2,4,16

For each factor k it scales quality q's learned gain by k (and its inverse gain by 1/k), so y is
quantized k times finer, then codes the held-out crops for real (tools/split_quality.py's split) and
prints bpp, PSNR and the decoded latent's relative error at each stage. No retraining: the hyperprior
and the decoder see a finer y than they were trained on. If the ``mean`` latent error stops falling
as k grows, the latent codec's synthesis (y_hat to latent), not the quantization, limits that quality;
if ``full`` stops following ``mean``, the one-step DiT does.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.split_quality import STAGES, _alex, held_out_crops, held_out_parser, load_codec, split  # noqa: E402


@contextlib.contextmanager
def finer(latent_codec, quality: int, factor: float) -> Iterator[None]:  # noqa: ANN001
    """The latent codec's (``DiTIC.codec``) gain of quality ``quality`` times ``factor``, its inverse gain
    divided by it, both restored afterwards."""
    if latent_codec.num_qualities == 1:
        raise ValueError("a single-rate model has no per-quality gain to scale")
    gains, inverses = latent_codec.gain.data, latent_codec.inverse_gain.data  # (Q, M), written in place
    gain, inverse = gains[quality - 1].clone(), inverses[quality - 1].clone()
    try:
        gains[quality - 1], inverses[quality - 1] = gain * factor, inverse / factor
        yield
    finally:
        gains[quality - 1], inverses[quality - 1] = gain, inverse


def main(argv: list[str] | None = None) -> int:
    p = held_out_parser(__doc__)
    p.add_argument("--quality", type=int, default=4)
    p.add_argument("--factors", default="1,2,4,16", help="comma-separated gain factors (1: as trained)")
    p.add_argument("--out", help="write the results here as JSON too")
    args = p.parse_args(argv)
    factors = [float(f) for f in args.factors.split(",")]
    if any(f <= 0 for f in factors):
        raise SystemExit(f"--factors must be positive, got {args.factors}")
    names, images = held_out_crops(args.data, args.holdout, args.seed, args.crop)
    codec = load_codec(args.checkpoint, device="cpu")
    if args.quality not in codec.qualities:
        raise SystemExit(f"--quality must be one of {list(codec.qualities)}, got {args.quality}")
    lpips = _alex("cpu")
    results = {"model_id": codec.model_id, "images": names, "crop": args.crop, "quality": args.quality,
               "factors": {}}  # fmt: skip
    for factor in factors:
        with finer(codec.model.codec, args.quality, factor), torch.no_grad():
            row = split(codec, images, args.quality, lpips)
        results["factors"][f"{factor:g}"] = row
        print(f"q{args.quality} gain x{factor:g}: {row['bpp']:.4f} bpp, " + ", ".join(
            f"{s} {row[s]['psnr']:.2f} dB / latent {row[s]['latent_rel_err']:.3f}" for s in STAGES),
            flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
