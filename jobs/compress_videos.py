"""``ditic compress-videos SRC DEST`` and ``ditic restore-video X.dticv -o out.mp4``.

Argument parsing and printing only: the Ray job is ``pipeline/video_job.py``, its manifests
``pipeline/video_manifest.py``, the restore ``pipeline/video_restore.py``. Design: docs/VIDEO.md.
"""

from __future__ import annotations

import argparse

from pipeline.storage import parse_storage_options
from pipeline.video_job import VideoJob, compress_videos
from pipeline.video_restore import restore_video

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    parser.add_argument("--model", default="ditic-small", help="model name or checkpoint path")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--storage-options", default=None, help="fsspec options as JSON")
    if command_name == "restore-video":
        parser.add_argument("container", help=".dticv file (local path or fsspec URL)")
        parser.add_argument("-o", "--output", required=True, help="output video (.mp4, .mkv, ...)")
        parser.add_argument("--codec", default="libx264", choices=["libx264", "libx265", "libsvtav1", "ffv1"])
        parser.add_argument("--crf", type=int, default=None, help="quality of the output codec")
        parser.add_argument("--frames", default=None, metavar="A:B", help="only frames A..B-1")
        return
    parser.add_argument("src", help="folder, glob or Parquet work list of videos (any fsspec URL)")
    parser.add_argument("dest", help="output root: DEST/<key>.dticv plus manifests")
    parser.add_argument("--quality", type=int, default=None, help="codec quality (default: the highest)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--range-frames", type=int, default=64, help="frames per decode/encode range")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per codec call")
    parser.add_argument("--actors", type=int, default=1, help="encoder actors (one GPU each)")
    parser.add_argument("--gpus-per-actor", type=float, default=None, help="default: 1 if GPUs exist")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs of a decode task")
    parser.add_argument("--no-verify", action="store_true", help="skip decoding each frame back")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: local)")


def run(args: argparse.Namespace) -> int:
    import json

    options = parse_storage_options(args.storage_options)
    if args.command == "restore-video":
        result = restore_video(args.container, args.output, options, args.model, args.codec, args.crf,
                               args.frames, args.device)  # fmt: skip
        print(f"restored {result['frames']} frames to {args.output}")
        for warning in result["warnings"]:
            print(f"warning: {warning}")
        return 0
    gpus = args.gpus_per_actor
    if gpus is None:
        import torch

        gpus = 1.0 if torch.cuda.is_available() else 0.0
    job = VideoJob(
        src=args.src, dest=args.dest, storage_options=options, model=args.model, quality=args.quality,
        device=args.device, dtype=args.dtype, range_frames=args.range_frames, batch_size=args.batch_size,
        actors=args.actors, cpus_per_actor=args.cpus_per_actor, gpus_per_actor=gpus,
        cpus_per_task=args.cpus_per_task, verify=not args.no_verify,
    )
    summary = compress_videos(job, address=args.address)
    print(json.dumps({k: v for k, v in summary.items() if k != "job"}, indent=2, default=str))
    return 0 if not summary["videos"]["error"] else 1
