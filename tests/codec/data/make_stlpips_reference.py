"""Regenerate ``stlpips_reference.json`` with the reference ``stlpips-pytorch`` package.

Run ONLY in a throwaway venv that has the package and its torchvision (it cannot live beside our
torch; DESIGN.md §4)::

    python3.11 -m venv /tmp/stref
    /tmp/stref/bin/pip install torch==2.14.1 torchvision==0.29.1 stlpips-pytorch==0.0.2 \
        ipython torchsummary pillow numpy
    /tmp/stref/bin/python tests/codec/data/make_stlpips_reference.py --make-inputs   # once
    /tmp/stref/bin/python tests/codec/data/make_stlpips_reference.py

``--make-inputs`` cuts the input PNGs (lossless, so both sides read identical pixels) from the
repo's example photos; the recipe is recorded in the JSON next to the values.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
PHOTOS = HERE.parents[2] / "examples" / "photos"
SEED = 20220

# name -> (first PNG, second PNG, how the pair was made)
PAIRS = {
    "fruits_jpeg_q10": ("fruits.png", "fruits_q10.png", "fruits crop vs its JPEG quality-10 round trip"),
    "fruits_shift_1px": ("fruits.png", "fruits_shift.png", "fruits crop vs the same crop 1 px right"),
    "butterfly_noise": ("butterfly.png", "butterfly_noise.png", "odd-sized crop vs + N(0, 12²) noise"),
    "noise_vs_noise": ("noise_a.png", "noise_b.png", "two uniform-noise images"),
    "identical": ("fruits.png", "fruits.png", "same image twice (distance 0)"),
}


def make_inputs() -> None:
    rng = np.random.default_rng(SEED)
    fruits = np.asarray(Image.open(PHOTOS / "opencv__fruits.jpg").convert("RGB"))
    crop, shifted = fruits[100:196, 200:328], fruits[100:196, 201:329]
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=10)
    butterfly = np.asarray(Image.open(PHOTOS / "opencv__butterfly.jpg").convert("RGB"))[50:125, 60:161]
    noisy = np.clip(butterfly + rng.normal(0, 12, butterfly.shape), 0, 255).round().astype(np.uint8)
    arrays = {
        "fruits.png": crop,
        "fruits_shift.png": shifted,
        "fruits_q10.png": np.asarray(Image.open(buf).convert("RGB")),
        "butterfly.png": butterfly,
        "butterfly_noise.png": noisy,
        "noise_a.png": rng.integers(0, 256, (48, 56, 3), dtype=np.uint8),
        "noise_b.png": rng.integers(0, 256, (48, 56, 3), dtype=np.uint8),
    }
    for name, array in arrays.items():
        Image.fromarray(array).save(HERE / "stlpips" / name)


def load(name: str):
    import torch

    array = np.asarray(Image.open(HERE / "stlpips" / name).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def vgg_gradient(model) -> dict:
    """d(ST-LPIPS-vgg)/d(x1) for the JPEG pair: the training-loss path."""
    x1 = load("fruits_q10.png").requires_grad_(True)
    model(load("fruits.png"), x1).sum().backward()
    grad = x1.grad[0]
    probes = [[0, 0, 0], [1, 40, 77], [2, 95, 127], [0, 63, 5]]
    return {
        "pair": "fruits_jpeg_q10",
        "net": "vgg",
        "wrt": "x1",
        "l1": float(grad.abs().sum()),
        "probes": {",".join(map(str, p)): float(grad[p[0], p[1], p[2]]) for p in probes},
    }


def make_values() -> None:
    import torch
    from stlpips_pytorch import stlpips

    out = {
        "package": "stlpips-pytorch==0.0.2",
        "torch": torch.__version__,
        "seed": SEED,
        "input_range": "png uint8 / 127.5 - 1",
        "pairs": {},
    }
    models = {net: stlpips.LPIPS(net=net, variant="shift_tolerant", verbose=False) for net in ("alex", "vgg")}
    with torch.no_grad():
        for pair, (a, b, recipe) in PAIRS.items():
            values = {net: float(m(load(a), load(b)).flatten()[0]) for net, m in models.items()}
            out["pairs"][pair] = {"x0": a, "x1": b, "recipe": recipe, **values}
    out["gradient"] = vgg_gradient(models["vgg"])
    (HERE / "stlpips_reference.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--make-inputs", action="store_true")
    if parser.parse_args().make_inputs:
        (HERE / "stlpips").mkdir(exist_ok=True)
        make_inputs()
    else:
        make_values()
