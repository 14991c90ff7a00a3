"""How fast the latent codec alone learns to code a fixed DC-AE latent (issue 4's stage-B question).

    python tools/latent_probe.py CHECKPOINT --data ../shared/data/train --steps 600 [--lr 1e-3] ...

Stage B ends at ~20 dB on training crops in every arm of session 6 (docs/TRAINING.md), whatever
stage A's autoencoder reached (up to 28 dB): the decoded latent's relative error stays near 0.2, and
that error is the loss. This probe isolates that part: the checkpoint's DC-AE encoder and ELIC
features are computed once for a bank of random crops of the training photos (``--holdout`` of them
kept out by the usual split), then only the latent codec (``model.codec``, fresh weights unless
``--keep``) trains on them, to ``rel_err(mean + res, y0) + λ·bpp``. No DiT, no pixel decoder, so it
runs on the CPU in minutes. It prints the relative error on held-out crops' latents every
``--every`` steps and writes the curve as JSON. ``--latent-m`` and ``--context-width`` try a fresh
codec of another width on the same latents (session 10: y's width against a longer-trained encoder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from codec.api import load_codec  # noqa: E402
from codec.config import CodecConfig  # noqa: E402
from codec.losses import bits_per_pixel  # noqa: E402
from codec.losses import latent_mse_loss as relative_error  # noqa: E402  (‖a − y0‖² / ‖y0‖²)
from codec.model import LatentCodec, latent_blocks, latent_pca  # noqa: E402


@torch.no_grad()
def latent_bank(  # noqa: ANN201
    model,  # noqa: ANN001
    bank,  # noqa: ANN001
    n: int,
    crop: int,
    seed: int,
    min_scale: float = 1.0,
    batch: int = 16,
    pixels: bool = False,
):
    """(latents, aux features[, the crops]) of n random crops of ``bank``, computed once, float32."""
    rng = np.random.default_rng(seed)
    lats, auxs, xs = [], [], []
    for start in range(0, n, batch):
        x = bank.sample(min(batch, n - start), crop, rng, min_scale=min_scale)
        latent, aux = model.encode_latent(x.float())
        lats.append(latent.float())
        auxs.append(aux.float())
        xs.append(x)
    return (torch.cat(lats), torch.cat(auxs)) + ((torch.cat(xs),) if pixels else ())


@torch.no_grad()
def pixel_check(  # noqa: ANN001
    model, lc: LatentCodec, x: torch.Tensor, lat: torch.Tensor, aux: torch.Tensor, scale: float
) -> dict:
    """PSNR of the checkpoint's DC-AE decoder on the clean latent (``ae``) and on the probe codec's
    mean + res (no DiT step) at the lowest and highest quality, on the held-out crops."""
    from codec.losses import psnr

    lc.eval()
    out = {"ae": round(float(psnr(x, model.decode_pixels(lat)).mean()), 2)}
    for q in (1, lc.num_qualities):
        heads = lc(lat / scale, aux, q)
        decoded = model.decode_pixels((heads["mean"] + heads["res"]) * scale)
        out[f"q{q}"] = round(float(psnr(x, decoded).mean()), 2)
    return out


def pca_baseline(lat: torch.Tensor, lat_h: torch.Tensor, ranks: list[int]) -> dict:
    """The relative error of the best linear code of rank k for the latent's 2x2 blocks (what y at
    1/64 holds per position): PCA fitted on the training latents, applied to both sets, no quantization.
    A bound for M = k channels of y with linear transforms at infinite rate."""

    train, held = latent_blocks(lat), latent_blocks(lat_h)
    mean, basis = latent_pca(train)
    out = {}
    for k in ranks:
        project = basis[:k].T @ basis[:k]
        out[f"rank{k}"] = {
            name: round(float(relative_error((z - mean) @ project + mean, z)), 4)
            for name, z in (("train", train), ("held_out", held))
        }
    return out


def run(args: argparse.Namespace) -> dict:
    from pipeline.train_data import CropBank, load_images

    torch.manual_seed(args.seed)
    codec = load_codec(args.checkpoint, device="cpu", dtype=torch.float32)
    model = codec.model.float()
    images = load_images(args.data, args.crop, max_side=args.max_side)
    train, held = CropBank(images).split(args.holdout, seed=0)
    t0 = time.perf_counter()
    lat, aux = latent_bank(model, train, args.bank, args.crop, args.seed, args.min_scale)
    lat_h, aux_h, x_h = latent_bank(model, held, 64, args.crop, args.seed + 1, pixels=True)
    scale = float(lat.pow(2).mean().sqrt()) if args.normalize else 1.0
    rms = float(lat.pow(2).mean().sqrt())
    print(f"bank {tuple(lat.shape)} in {time.perf_counter() - t0:.0f} s; latent rms {rms:.3f}", flush=True)
    cfg: CodecConfig = model.cfg
    pca = pca_baseline(lat, lat_h, args.pca) if args.pca else None
    if pca:
        print(json.dumps({"pca": pca}), flush=True)
    if args.keep and args.linear_path and not cfg.latent.linear_path:
        raise SystemExit("--keep with --linear-path needs a checkpoint that has the linear path")
    if args.linear_path:  # the codec's own option (codec/model.py), set as ditic train sets it
        cfg = cfg.replace(**{"latent.linear_path": True})
    if args.keep and (args.latent_m or args.context_width):
        raise SystemExit("--keep keeps the checkpoint's latent codec: no --latent-m / --context-width")
    if args.latent_m:
        cfg = cfg.replace(**{"latent.M": args.latent_m})
    if args.context_width:
        cfg = cfg.replace(**{"latent.context_width": args.context_width})
    lc = model.codec if args.keep else LatentCodec(cfg)
    if args.linear_path and not args.keep:
        lc.init_linear_path(lat / scale)
    lc.train()
    params = [p for n, p in lc.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed)
    lam = torch.tensor(args.lam)
    pixels = args.crop * args.crop
    curve = []

    def heldout() -> dict:
        """Relative error and bpp at the lowest and highest quality: on the held-out crops' latents
        (``q1``, ``q4``), and on the first 64 latents of the training bank (``train_q4``)."""
        lc.eval()
        with torch.no_grad():
            row = {}
            top = cfg.latent.num_qualities
            for key, q, y0, a in (("q1", 1, lat_h, aux_h), (f"q{top}", top, lat_h, aux_h),
                                  (f"train_q{top}", top, lat[:64], aux[:64])):  # fmt: skip
                out = lc(y0 / scale, a, q)
                bpp = bits_per_pixel(out["likelihoods"], pixels).mean()
                err = relative_error(out["mean"] + out["res"], y0 / scale)
                row[key] = {"err": round(float(err), 4), "bpp": round(float(bpp), 4)}
        lc.train()
        return row

    for step in range(args.steps + 1):
        if step % args.every == 0:
            row = {"step": step, "seconds": round(time.perf_counter() - t0, 1), **heldout()}
            curve.append(row)
            print(json.dumps(row), flush=True)
        if step == args.steps:
            break
        idx = torch.from_numpy(rng.integers(0, len(lat), args.batch_size))
        q = torch.from_numpy(rng.integers(1, cfg.latent.num_qualities + 1, args.batch_size))
        y0 = lat[idx] / scale
        out = lc(y0, aux[idx], q)
        err = relative_error(out["mean"] + out["res"], y0)
        bpp = bits_per_pixel(out["likelihoods"], pixels).mean()
        warm = min(1.0, (step + 1) / 50)
        for g in opt.param_groups:
            g["lr"] = args.lr * warm
        loss = err + lam * bpp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 4.0)
        opt.step()
    psnr_db = pixel_check(model, lc, x_h, lat_h, aux_h, scale)
    print(json.dumps({"psnr_held_out": psnr_db}), flush=True)
    return {"options": vars(args), "pca": pca, "curve": curve, "psnr_held_out": psnr_db}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--holdout", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--max-side", type=int, default=1024)
    p.add_argument("--bank", type=int, default=512, help="training crops whose latents are precomputed")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lam", type=float, default=0.0, help="λ on bpp (relative-error units)")
    p.add_argument("--normalize", action="store_true", help="divide the latent by its RMS (unit scale)")
    p.add_argument("--keep", action="store_true", help="start from the checkpoint's latent codec")
    p.add_argument("--min-scale", type=float, default=1.0, help="scale augmentation of the training crops")
    p.add_argument("--pca", type=int, nargs="*", help="also the linear (PCA) bound at ranks K, e.g. 48 64")
    p.add_argument("--linear-path", action="store_true",
                   help="the codec's linear path (latent.linear_path), set to the PCA code")  # fmt: skip
    p.add_argument("--latent-m", type=int,
                   help="a fresh codec with y this wide (latent.M; default the checkpoint's)")  # fmt: skip
    p.add_argument("--context-width", type=int,
                   help="a fresh codec with this context-model width (latent.context_width)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    result = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
