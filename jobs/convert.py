"""``ditic convert-official RELEASE.pth OUT.safetensors``: a released DiT-IC checkpoint -> ours."""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    parser.add_argument("release", help="the released checkpoint (.pth, flat state dict, LoRA merged)")
    parser.add_argument("out", help="where to write our checkpoint (.safetensors)")


def run(args: argparse.Namespace) -> int:
    from codec.weights import convert_official

    start = time.perf_counter()
    model_id = convert_official(args.release, args.out)
    print(f"wrote {args.out}: ditic-official, model id {model_id} ({time.perf_counter() - start:.1f} s)")
    return 0
