"""How many dimensions y needs: the best linear code of the DC-AE latent at a given width M, on the CPU.

    OMP_NUM_THREADS=2 python tools/latent_rank.py ditic-small --data .carry/train --widths 64,96,112,128

y sits at 1/64 scale and the DC-AE latent at 1/32, so each position of y codes a 2×2 block of the latent:
4 × latent_channels numbers (128 for ditic-small). A y of width M < 128 cannot carry all of them. This
fits PCA to the blocks of the training photos' latents (centre crops, the held-out photos left out as
in tools/split_quality.py) and prints, per M, the relative squared error of the best rank-M linear code
on the held-out photos: the floor that no finer quantization removes from a linear path of that width
(the latent codec's nonlinear transforms may do better or worse; compare split_quality's ``mean``
latent error).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codec.api import load_codec  # noqa: E402
from pipeline.train_data import CropBank, load_images  # noqa: E402
from tools.split_quality import held_out_parser  # noqa: E402


@torch.no_grad()
def latent_blocks(model, crops: torch.Tensor, batch: int = 4) -> torch.Tensor:  # noqa: ANN001
    """(N, 4·C) the encoder's latent of each crop, cut in the 2×2 blocks that one position of y codes."""
    rows = []
    for start in range(0, len(crops), batch):
        latent = model.encode_latent(crops[start : start + batch])[0].float()
        blocks = torch.nn.functional.pixel_unshuffle(latent, 2)
        rows.append(blocks.permute(0, 2, 3, 1).reshape(-1, blocks.shape[1]))
    return torch.cat(rows)


def rank_errors(train: torch.Tensor, held: torch.Tensor, widths: list[int]) -> dict[int, float]:
    """{M: relative squared error of ``held`` coded by the top-M principal components of ``train``}."""
    mean = train.mean(0)
    centred = train - mean
    eigenvalues, vectors = torch.linalg.eigh(centred.T @ centred / len(train))
    vectors = vectors[:, eigenvalues.argsort(descending=True)]
    out = {}
    for m in widths:
        basis = vectors[:, :m]
        residual = (held - mean) - ((held - mean) @ basis) @ basis.T
        out[m] = float(residual.pow(2).sum() / held.pow(2).sum())
    return out


def main(argv: list[str] | None = None) -> int:
    p = held_out_parser(__doc__)
    p.add_argument("--widths", default="64,96,112,128", help="comma-separated widths M of y")
    args = p.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    model = load_codec(args.checkpoint, device="cpu").model
    dims = 4 * model.cfg.vae.latent_channels
    if any(not 1 <= w <= dims for w in widths):
        raise SystemExit(f"--widths must be in 1..{dims} (4 × the latent's channels), got {args.widths}")
    train, held = CropBank(load_images(args.data, args.crop)).split(args.holdout, seed=args.seed)
    if held is None:
        raise SystemExit("--holdout must be at least 1")
    train_blocks = latent_blocks(model, train.center_crops(args.crop))
    held_blocks = latent_blocks(model, held.center_crops(args.crop))
    if len(train_blocks) < dims:
        raise SystemExit(f"{len(train_blocks)} latent blocks from the training side: too few to fit {dims} "
                         "dimensions (more photos or a larger --crop)")  # fmt: skip
    errors = rank_errors(train_blocks, held_blocks, widths)
    print(json.dumps({"blocks": {"train": len(train_blocks), "held_out": len(held_blocks)}, "dims": dims,
                      "held_out_rel_err": {str(m): round(e, 4) for m, e in errors.items()}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
