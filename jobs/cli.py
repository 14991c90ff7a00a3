"""The ``ditic`` console script: one entry point, one subcommand per job module.

Each job module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported
only when their subcommand runs, so ``ditic info`` does not pay for Ray or PyAV.
Errors that users cause become one line on stderr and a non-zero exit; never a traceback
(set ``DITIC_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "compress": ("jobs.compress_files", "compress image files to .dtic payloads"),
    "decompress": ("jobs.compress_files", "decompress .dtic payloads to PNG"),
    "info": ("jobs.compress_files", "print the header of a .dtic payload"),
    "compress-images": ("jobs.compress_images", "bulk-compress images from object storage on Ray"),
    "restore": ("jobs.restore", "decode a compressed archive back to images"),
    "extract": ("jobs.restore", "fetch and decode one item of an archive by key"),
    "verify": ("jobs.restore", "check CRCs and manifests of an archive without decoding"),
    "compress-videos": ("jobs.compress_videos", "recompress videos frame by frame on Ray"),
    "restore-video": ("jobs.compress_videos", "rebuild a playable video from a .dticv container"),
    "evaluate": ("jobs.evaluate", "rate-distortion evaluation against classical codecs"),
    "evaluate-video": ("jobs.evaluate_video", "video rate-distortion against x264/x265/SVT-AV1"),
    "train": ("jobs.train", "train a DiT-IC model"),
    "bench": ("jobs.bench", "throughput and latency benchmarks"),
    "convert-official": ("jobs.convert", "convert a released DiT-IC checkpoint to ours"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ditic", description="DiT-IC learned image compression")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(sub, name)
    return parser


# The CUDA caching allocator's setting for every `ditic` process, unless the user set one: expandable
# segments return the pieces a budgeted (strip-by-strip) decode frees, so the process's reserved
# footprint tracks what it allocates. ditic-official at 2048² under a 1.5 GiB decode budget on an H200
# (docs/BENCHMARKS.md, session 12): 3.43 GiB reserved against 4.62 without. Read when CUDA first
# allocates, so it is set before any subcommand runs; local Ray workers inherit it.
ALLOCATOR_DEFAULTS = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def allocator_defaults(environ: dict | os._Environ = os.environ) -> None:
    """Set :data:`ALLOCATOR_DEFAULTS` in ``environ`` where the user has not set them."""
    for key, value in ALLOCATOR_DEFAULTS.items():
        environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    allocator_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from codec.errors import DiticError

    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("ditic: interrupted", file=sys.stderr)
        return 130
    except (DiticError, OSError, ValueError) as e:
        if os.environ.get("DITIC_DEBUG"):
            raise
        print(f"ditic {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    """The user's error, not a worker's traceback: a Ray task error (it subclasses its cause's class,
    so it lands here) carries the remote traceback in its text; its ``cause`` is the error itself."""
    cause = getattr(error, "cause", None)
    if type(error).__name__.startswith("RayTaskError") and isinstance(cause, BaseException):
        error = cause
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
