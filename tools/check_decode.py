"""Decode payloads exported on another device (``ditic bench --mode export``) and compare.

    python tools/check_decode.py EXPORT_DIR [--model CKPT_OR_NAME] [--threads 1,2]

Checks, per payload and per CPU thread count: the entropy-decoded latents ``y_hat`` equal the exporting
device's (max |diff| must stay far below one quantization step: any symbol error shows as >= ~1), and the
decoded pixels match (max |diff| in 8-bit levels, PSNR). Exit code 1 on any latent mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codec import bitstream  # noqa: E402
from codec.api import load_codec  # noqa: E402
from codec.model import PAD_MULTIPLE  # noqa: E402

LATENT_TOLERANCE = 1e-6


def check(folder: Path, model: str, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    info = json.loads((folder / "expected.json").read_text())
    expected = np.load(folder / "expected.npz")
    codec = load_codec(model, allow_untrained=True)
    if codec.model_id != info["model_id"]:
        raise SystemExit(f"model {model} is {codec.model_id}, the payloads were made by {info['model_id']}")
    rows = []
    for name in info["items"]:
        payload = (folder / f"{name}.dtic").read_bytes()
        header, strings, _ = bitstream.unpack(payload)
        shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
        y_hat = codec.model.decompress_heads([strings], shape, header.quality)["y_hat"].numpy()
        pixels = np.asarray(codec.decode([payload])[0]).astype(np.float64)
        ref = expected[f"{name}/pixels"].astype(np.float64)
        mse = float(np.mean((pixels - ref) ** 2))
        rows.append({
            "item": name, "threads": threads,
            "latent_max_diff": float(np.abs(y_hat - expected[f"{name}/y_hat"]).max()),
            "pixel_max_diff": float(np.abs(pixels - ref).max()),
            "pixel_psnr": float("inf") if mse == 0 else 10 * np.log10(255**2 / mse),
        })  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default=None, help="default: the model named in expected.json")
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    model = args.model or json.loads((args.folder / "expected.json").read_text())["model"]
    rows = [r for t in args.threads.split(",") for r in check(args.folder, model, int(t))]
    bad = [r for r in rows if r["latent_max_diff"] > LATENT_TOLERANCE]
    worst_latent = max(r["latent_max_diff"] for r in rows)
    worst_psnr = min(r["pixel_psnr"] for r in rows)
    print(
        f"{len(rows)} decodes: latent max |diff| {worst_latent:.3g}, worst pixel PSNR {worst_psnr:.1f} dB, "
        f"max pixel diff {max(r['pixel_max_diff'] for r in rows):.0f}; latent mismatches: {len(bad)}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
