"""Real-bitstream check of an exported checkpoint on held-out TRAINING photos (never the dev set).

Encodes centred crops of the images that ``ditic train --holdout N --seed S`` kept out of training
(the same split, recomputed from the same folder) at every quality through ``codec.api``, decodes
them, and reports the true payload bpp, PSNR and ST-LPIPS (Alex: not the VGG net trained on).

    python tools/quick_eval.py runs/gpu/ditic-small.safetensors --data .carry/train --holdout 4
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
from codec.metrics import psnr  # noqa: E402
from pipeline.train_data import CropBank, load_images  # noqa: E402


def held_out_crops(data: str, holdout: int, seed: int, crop: int) -> tuple[list[str], list[np.ndarray]]:
    """(names, H×W×3 uint8 centred crops) of the held-out images of a training run."""
    bank = CropBank(load_images(data, crop))
    _, held = bank.split(holdout, seed=seed)
    if held is None:
        raise SystemExit("--holdout must be at least 1")
    crops = held.center_crops(crop).add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return held.names, [c.permute(1, 2, 0).numpy() for c in crops]


def evaluate(
    checkpoint: str, images: list[np.ndarray], device: str, qualities: list[int] | None = None
) -> dict:
    codec = load_codec(checkpoint, device=device)
    lpips = _alex(device)
    results: dict = {"model_id": codec.model_id, "qualities": {}}
    for q in qualities or codec.qualities:
        t0 = time.perf_counter()
        items = codec.encode_items(images, quality=q)
        decoded = codec.decode([it.payload for it in items])
        ref = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        out = torch.from_numpy(np.stack([np.asarray(im) for im in decoded])).permute(0, 3, 1, 2)
        row = {
            "bpp": round(float(np.mean([it.bpp for it in items])), 5),
            "psnr": round(float(psnr(ref, out).mean()), 3),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        if lpips is not None:
            with torch.no_grad():
                d = lpips(ref.float().div(127.5).sub(1).to(device), out.float().div(127.5).sub(1).to(device))
            row["stlpips_alex"] = round(float(d.mean()), 4)
        results["qualities"][f"q{q}"] = row
    return results


def _alex(device: str) -> torch.nn.Module | None:
    try:
        from codec.perceptual import STLPIPS

        return STLPIPS("alex").to(device)
    except Exception as e:  # noqa: BLE001 - the metric is optional; say why it is missing
        print(f"quick_eval: no ST-LPIPS Alex ({e})", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="the training folder the run used")
    p.add_argument("--holdout", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--qualities", type=int, nargs="*", help="default: all the model has")
    p.add_argument("--out", help="write the results here as JSON too")
    args = p.parse_args(argv)
    names, images = held_out_crops(args.data, args.holdout, args.seed, args.crop)
    results = {
        "images": names,
        "crop": args.crop,
        **evaluate(args.checkpoint, images, args.device, args.qualities),
    }
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
