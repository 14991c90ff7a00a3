"""codec.kernels' Triton depthwise convolution against cuDNN's, at the ditic-official decoder's shapes for a
2048² image, over tiles (BLOCK_W, BLOCK_C, warps). GPU tool. Prints a Markdown table of median ms per call.

    python tools/kernel_bench.py --tiles 16x64x4,32x64x4,16x128x4,32x128x8 --to-host

``--to-host``: also ``codec.image.to_uint8`` of a 2048² decode (bf16 on the card) into pinned and into
pageable host memory, and PIL's image from it, median wall ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcae_variants import _median_ms  # noqa: E402  (this folder: the wall-clock median with syncs)

from codec import kernels  # noqa: E402

# (channels, side, kernel): the GLUMBConv's 3x3 and the multiscale 5x5 at 1/8, 1/16, 1/32 of 2048²
SHAPES = [(4096, 256, 3), (8192, 128, 3), (8192, 64, 3), (1536, 256, 5), (3072, 128, 5), (3072, 64, 5)]


def _ms(fn, repeats: int = 20) -> float:  # noqa: ANN001
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _to_host() -> None:
    from PIL import Image

    from codec import image

    x = torch.rand(1, 3, 2048, 2048, device="cuda", dtype=torch.bfloat16) * 2 - 1
    for pinned in (False, True):
        ms = _median_ms(lambda: image.to_uint8(x, pinned=pinned), 20, warmup=3)  # noqa: B023
        pil = _median_ms(lambda: Image.fromarray(image.to_uint8(x, pinned=pinned)[0], "RGB"), 20, warmup=3)  # noqa: B023
        print(f"to_uint8 2048², pinned={pinned}: {ms:.2f} ms; with PIL's image: {pil:.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", default="16x64x4,32x64x4,16x128x4,32x128x4,64x64x4,8x128x4,32x128x8")
    parser.add_argument("--to-host", action="store_true")
    args = parser.parse_args()
    if args.to_host:
        _to_host()
    tiles = [tuple(int(v) for v in t.split("x")) for t in args.tiles.split(",")]
    print(torch.cuda.get_device_name(), torch.__version__)
    print("| C, side, k | cuDNN ms | " + " | ".join(f"{w}x{c}x{n} ms" for w, c, n in tiles) + " |")
    print("| --- " * (2 + len(tiles)) + "|")
    totals = [0.0] * (1 + len(tiles))
    for c, side, k in SHAPES:
        x = torch.randn(1, c, side, side, device="cuda", dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, 1, k, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(c, device="cuda", dtype=torch.bfloat16)
        ref = F.conv2d(x, w, b, padding=k // 2, groups=c)
        row = [_ms(lambda: F.conv2d(x, w, b, padding=k // 2, groups=c))]  # noqa: B023
        for tile in tiles:
            kernels.DEPTHWISE_TILE = tile
            out = kernels.depthwise_conv(x, w, b)
            err = (out.float() - ref.float()).abs().max().item()
            assert err < 0.1 * ref.float().abs().max().item(), (tile, err)
            row.append(_ms(lambda: kernels.depthwise_conv(x, w, b)))  # noqa: B023
        totals = [a + r for a, r in zip(totals, row, strict=True)]
        print(f"| {c}, {side}², {k}x{k} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    print("| all six | " + " | ".join(f"{v:.3f}" for v in totals) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
