"""CPU probe of the DC-AE decoder's row stripes (docs/TRAINING.md, session 9).

    OMP_NUM_THREADS=1 python tools/stripe_probe.py interpolate 1200
    OMP_NUM_THREADS=1 python tools/stripe_probe.py pixel_shuffle 1200

Trains ditic-small's DC-AE alone (encoder + decoder, MSE, AdamW lr 1e-3, 4 random 128² crops a step,
seed 0) on the training photos other than the 4 held-out ones, with the decoder's up blocks in the
given diffusers ``upsample_block_type``. Then it decodes the 4 held-out photos (shorter side 256) and
prints, as JSON: PSNR per photo, and the row/column ratio of the output: the mean |row 2i − row 2i+1|
over the mean |col 2j − col 2j+1|. It is ~1 for photos and well above 1 for row stripes.
``interpolate`` is the release's (and ditic-small's) choice; ``pixel_shuffle`` lets the up block's
conv write each sub-pixel itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codec.config import get_config  # noqa: E402

HELD_OUT = ("caer__puppy.jpg", "mate__garden.jpg", "opencv__butterfly.jpg", "opencv__graf1.png")


def load(path: Path, side: int) -> torch.Tensor:
    """(3, H, W) in [-1, 1], downsized (bicubic) so that the shorter side is at most ``side``."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = side / min(w, h)
    if s < 1:
        im = im.resize((max(64, int(w * s)), max(64, int(h * s))), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1


def row_col_ratio(x: torch.Tensor) -> float:
    rows = (x[..., 0::2, :] - x[..., 1::2, :]).abs().mean()
    cols = (x[..., :, 0::2] - x[..., :, 1::2]).abs().mean()
    return float(rows / cols)


def main(argv: list[str] | None = None) -> int:
    from diffusers import AutoencoderDC

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["interpolate", "pixel_shuffle"])
    p.add_argument("steps", type=int)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train"))
    p.add_argument("--images", type=int, default=60, help="training photos used (sorted by name)")
    args = p.parse_args(argv)

    cfg = get_config("ditic-small").vae.diffusers_config()
    cfg["upsample_block_type"] = args.mode
    torch.manual_seed(0)
    vae = AutoencoderDC(**cfg)
    root = Path(args.data)
    names = sorted(n.name for n in root.iterdir() if n.suffix.lower() in (".jpg", ".jpeg", ".png"))
    train = [load(root / n, 384) for n in names if n not in HELD_OUT][: args.images]
    test = [load(root / n, 256) for n in HELD_OUT]
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    crop, batch = 128, 4
    start = time.time()
    for _ in range(args.steps):
        crops = []
        for _ in range(batch):
            im = train[rng.integers(len(train))]
            y, x = rng.integers(im.shape[1] - crop + 1), rng.integers(im.shape[2] - crop + 1)
            crops.append(im[:, y : y + crop, x : x + crop])
        x = torch.stack(crops)
        loss = (vae.decoder(vae.encoder(x)) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    psnr, ratio_out, ratio_in = [], [], []
    with torch.no_grad():
        for im in test:
            x = im[None, :, : im.shape[1] // 64 * 64, : im.shape[2] // 64 * 64]
            out = vae.decoder(vae.encoder(x)).clamp(-1, 1)
            psnr.append(float(10 * torch.log10(4 / (out - x).pow(2).mean())))
            ratio_out.append(row_col_ratio(out))
            ratio_in.append(row_col_ratio(x))
    print(json.dumps({
        "mode": args.mode, "steps": args.steps, "seconds": round(time.time() - start),
        "psnr": [round(v, 2) for v in psnr], "mean_psnr": round(sum(psnr) / len(psnr), 2),
        "row_col_ratio_out": [round(v, 2) for v in ratio_out],
        "row_col_ratio_orig": [round(v, 2) for v in ratio_in],
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
