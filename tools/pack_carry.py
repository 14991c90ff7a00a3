"""Prepare what a GPU training run carries (git-ignored ``.carry/``), within the 64 MiB a run may take.

* ``.carry/train/``: the training photos, each downsized to a longer side of at most ``--max-side``
  and stored as JPEG quality 90 (the 20 MB of originals become ~7 MB; crops of 256² from a
  1280-px wallpaper hold more structure than from a 2560-px one, which suits a short run).
* ``.carry/stlpips/`` and ``.carry/stlpips-alex/``: the ST-LPIPS VGG (training loss) and Alex
  (evaluation) weights of the installed ``stlpips-pytorch``, cast to fp16 (59 + 10 MB become
  28 + 5 MB); ``codec.perceptual`` reads them through ``DITIC_STLPIPS_DIR`` and casts back to fp32
  on load. Apart, so a run that must travel light (a cold resume) can leave Alex behind.
  ``--int8-vgg`` writes the VGG weights as int8 instead (``codec.perceptual.save_weights``: 15 MB, a
  quarter of the original; distances within 0.5 %): the tree grew to ~28 MB, and bundle + photos +
  fp16 VGG no longer fit the cap beside it, int8 VGG does (~57 MiB in all).

    python tools/pack_carry.py --data ../shared/data/train      # never the dev set
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from codec.perceptual import weights_path  # noqa: E402
from pipeline.train_data import load_images  # noqa: E402


def pack_photos(data: str, out: Path, max_side: int, quality: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for im in load_images(data, crop=256, max_side=max_side):
        buf = io.BytesIO()
        Image.fromarray(im.pixels).save(buf, format="JPEG", quality=quality)
        (out / (Path(im.name).stem + ".jpg")).write_bytes(buf.getvalue())
        total += buf.tell()
    return total


def pack_perceptual(net: str, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    src = weights_path(net)
    state = torch.load(src, map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(half, out / src.name)
    return (out / src.name).stat().st_size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="training photos (not the dev set)")
    p.add_argument("--out", default=".carry", help="where to write train/ and stlpips/")
    p.add_argument("--max-side", type=int, default=1280)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--int8-vgg", action="store_true", help="VGG weights in int8 (15 MB) instead of fp16")
    args = p.parse_args()
    if "/dev" in str(Path(args.data).resolve()):
        raise SystemExit("refusing to train on a dev set: pass the training folder")
    out = Path(args.out)
    photos = pack_photos(args.data, out / "train", args.max_side, args.quality)
    if args.int8_vgg:
        from codec.perceptual import save_weights

        for old in (out / "stlpips").glob("vgg_shift_tolerant.*"):
            old.unlink()
        (out / "stlpips").mkdir(parents=True, exist_ok=True)
        path = save_weights("vgg", out / "stlpips" / "vgg_shift_tolerant.safetensors", torch.int8)
        vgg = path.stat().st_size
    else:
        vgg = pack_perceptual("vgg", out / "stlpips")
    alex = pack_perceptual("alex", out / "stlpips-alex")
    print(
        f"{out}/train: {photos / 2**20:.1f} MiB; {out}/stlpips (VGG): {vgg / 2**20:.1f} MiB; "
        f"{out}/stlpips-alex: {alex / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
