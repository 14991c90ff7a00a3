"""Where a trained model loses its quality: the autoencoder, the latent codec, or the one-step DiT.

    python tools/split_quality.py ditic-small --data ../shared/data/train --holdout 4 --crop 512

On the held-out TRAINING photos of ``ditic train --holdout N --seed S`` (the same split as
``tools/quick_eval.py``; never the dev set), centred crops, every quality, with the real bitstream:

* ``ae``: the DC-AE decoder on the clean latent of the encoder (stage A's ceiling, no coding);
* ``mean``: the DC-AE decoder on the decoded ``mean`` head (the latent codec alone);
* ``mean+res``: on mean + res (the one-step formula without the DiT's velocity);
* ``full``: on x_hat_0 = mean - sigma_t g(s) v + res, what the codec decodes.

For each: PSNR and ST-LPIPS (Alex) against the photo, and the latent's relative squared error to the
clean latent (||a - y0||² / ||y0||²). Issue 4's diagnosis (docs/TRAINING.md); prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from codec import bitstream, flow  # noqa: E402
from codec.api import load_codec  # noqa: E402
from codec.metrics import psnr  # noqa: E402
from codec.model import PAD_MULTIPLE  # noqa: E402
from tools.quick_eval import _alex, held_out_crops  # noqa: E402

STAGES = ("ae", "mean", "mean+res", "full")


def trained_crops(data: str, n: int, seed: int, crop: int) -> tuple[list[str], list[np.ndarray]]:
    """(names, centred crops) of the first n photos of the training side of the same split."""
    from pipeline.train_data import CropBank, load_images

    train, _ = CropBank(load_images(data, crop)).split(n, seed=seed)
    crops = train.center_crops(crop)[:n].add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return train.names[:n], [c.permute(1, 2, 0).numpy() for c in crops]


@torch.no_grad()
def split(codec, images: list[np.ndarray], quality: int, lpips) -> dict:  # noqa: ANN001
    model = codec.model
    ref = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    x = ref.float().div(127.5).sub(1).to(codec.device, codec.dtype)
    clean, _ = model.encode_latent(x)
    items = codec.encode_items(images, quality=quality)
    latents = {"ae": clean}
    parts = {k: [] for k in ("mean", "mean+res", "full")}
    for item in items:
        header, strings, _ = bitstream.unpack(item.payload)
        shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
        heads = model.decompress_heads([strings], shape, quality)
        velocity = model.synthesize(heads)[1]
        parts["mean"].append(heads["mean"])
        parts["mean+res"].append(heads["mean"] + heads["res"])
        full = flow.one_step(heads["mean"], heads["scale"], velocity, heads["res"], model.cfg.flow)
        parts["full"].append(full)
    latents |= {k: torch.cat(v) for k, v in parts.items()}
    row = {"bpp": float(np.mean([it.bpp for it in items]))}
    for name in STAGES:
        latent = latents[name]
        pixels = model.decode_pixels(latent)[..., : ref.shape[-2], : ref.shape[-1]]
        out = pixels.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()
        err = (latent.float() - clean.float()).pow(2).sum() / clean.float().pow(2).sum()
        stage = {"psnr": float(psnr(ref, out).mean()), "latent_rel_err": float(err)}
        if lpips is not None:
            distance = lpips(ref.float().div(127.5).sub(1), out.float().div(127.5).sub(1))
            stage["stlpips_alex"] = float(distance.mean())
        row[name] = {k: round(v, 4) for k, v in stage.items()}
    return row


def held_out_parser(doc: str) -> argparse.ArgumentParser:
    """The options every held-out probe shares (this one, gain_probe, latent_rank): the model and the
    training run's photos, split as the run split them."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("checkpoint", help="config name (ditic-small: the embedded weights) or checkpoint")
    p.add_argument("--data", required=True, help="the training folder the run used")
    p.add_argument("--holdout", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop", type=int, default=512)
    return p


def main(argv: list[str] | None = None) -> int:
    p = held_out_parser(__doc__)
    p.add_argument("--trained-on", action="store_true",
                   help="the first N photos the run TRAINED on instead (N = --holdout): how much of the "
                   "held-out gap is fitting the training photos")  # fmt: skip
    p.add_argument("--out", help="write the results here as JSON too")
    args = p.parse_args(argv)
    if args.trained_on:
        names, images = trained_crops(args.data, args.holdout, args.seed, args.crop)
    else:
        names, images = held_out_crops(args.data, args.holdout, args.seed, args.crop)
    codec = load_codec(args.checkpoint, device="cpu")
    lpips = _alex("cpu")
    results = {"model_id": codec.model_id, "images": names, "crop": args.crop, "qualities": {}}
    for q in codec.qualities:
        results["qualities"][f"q{q}"] = row = split(codec, images, q, lpips)
        print(f"q{q} {row['bpp']:.4f} bpp: " + ", ".join(
            f"{s} {row[s]['psnr']:.2f} dB / {row[s].get('stlpips_alex', float('nan')):.3f} / "
            f"latent {row[s]['latent_rel_err']:.3f}" for s in STAGES), flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
