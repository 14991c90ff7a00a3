"""``ditic compress-images SRC DEST``: bulk compression on Ray Data, resumable, into an archive.

Thin: parses flags, calls :func:`pipeline.job.compress_images`, prints the summary.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.job import CompressOptions, compress_images
from pipeline.sources import IMAGE_EXTENSIONS
from pipeline.storage import parse_storage_options
from pipeline.summary import format_summary


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    parser.add_argument("source", metavar="SRC", help="URL prefix or glob (s3://, gs://, file://, path) or a "
                        "Parquet work list (column uri, optional key)")  # fmt: skip
    parser.add_argument("dest", metavar="DEST", help="archive URL (s3://bucket/archive, a local folder)")
    parser.add_argument(
        "--model", default="ditic-small", help="named model or checkpoint path (default %(default)s)"
    )
    parser.add_argument(
        "--quality", type=int, default=None, help="quality level (default: the model's highest)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, help="images per codec call (default %(default)s)"
    )
    parser.add_argument(
        "--gpus-per-actor", type=float, default=1.0, help="GPUs per encoder actor (default 1)"
    )
    parser.add_argument(
        "--num-actors", type=int, default=None, help="encoder actors (default: one per GPU, or 1)"
    )
    parser.add_argument(
        "--cpu-readers", type=int, default=None, help="concurrent read tasks (default: CPUs/2)"
    )
    parser.add_argument(
        "--shard-size", type=int, default=64, help="items per output shard (default %(default)s)"
    )
    parser.add_argument(
        "--metrics", action="store_true", help="decode each payload and record PSNR / MS-SSIM"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="delete the archive's parts and start afresh")
    mode.add_argument("--resume", action="store_true", help="skip items already committed (the default)")
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)"
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--storage-options", default=None, metavar="JSON",
                        help='fsspec options, e.g. \'{"endpoint_url": "http://127.0.0.1:8333"}\'; '
                        "credentials come from the environment, never from here")  # fmt: skip
    parser.add_argument("--all-files", action="store_true", help="list every object of SRC, not only images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 3 when any item failed")


def options_from_args(args: argparse.Namespace) -> CompressOptions:
    return CompressOptions(
        source=args.source, dest=args.dest, model=args.model, quality=args.quality,
        batch_size=args.batch_size, gpus_per_actor=args.gpus_per_actor, num_actors=args.num_actors,
        cpu_readers=args.cpu_readers, shard_size=args.shard_size, metrics=args.metrics,
        overwrite=args.overwrite, address=args.address, device=args.device, dtype=args.dtype,
        storage_options=parse_storage_options(args.storage_options),
        extensions=None if args.all_files else IMAGE_EXTENSIONS, progress=not args.no_progress,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.shard_size < 1:
        raise ValueError(
            f"--batch-size and --shard-size must be at least 1 (got {args.batch_size}, {args.shard_size})"
        )
    summary = compress_images(options_from_args(args))
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "shards"}, indent=2, default=str))
    else:
        print("\nditic compress-images: done", file=sys.stderr)
        print(format_summary(summary))
    return 3 if args.strict and summary["error"] else 0
