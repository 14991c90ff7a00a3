"""``ditic compress`` / ``decompress`` / ``info``: image files to ``.dtic`` payloads and back, locally.

    ditic compress a.png b.jpg -o OUT [-q Q] [--model M] [--device D] [--batch N]   # OUT/a.dtic, OUT/b.dtic
    ditic decompress OUT/*.dtic -o REC [--model M] [--device D] [--batch N]         # REC/a.png, REC/b.png
    ditic info OUT/a.dtic [--json]

A file that fails (unreadable image, corrupt payload, other model) costs one line on stderr and a
non-zero exit; the other files still complete. Outputs are written to a temporary name and moved
into place, so an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from codec.config import DECODERS

DEFAULT_MODEL = "ditic-small"


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    if command_name == "info":
        parser.add_argument("payloads", nargs="+", type=Path, metavar="PAYLOAD", help=".dtic files")
        parser.add_argument("--json", action="store_true", help="one JSON object per payload")
        return
    inputs = "image files" if command_name == "compress" else ".dtic payloads"
    parser.add_argument("inputs", nargs="+", type=Path, metavar="FILE", help=inputs)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="output directory")
    if command_name == "compress":
        parser.add_argument(
            "-q", "--quality", type=int, help="quality level, higher is better (default: middle)"
        )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"config name or checkpoint (default {DEFAULT_MODEL})"
    )
    if command_name == "decompress":
        parser.add_argument("--decoder", choices=DECODERS, default=None,
                            help="the model's DC-AE decoder: perceptual (default) or fidelity (higher "
                                 "PSNR, where the model ships one; the same payloads)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: cuda if available)")
    parser.add_argument("--batch", type=int, default=8, metavar="N", help="files per model call (default 8)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="refuse images (payloads) above N pixels: bounds memory for untrusted input "
                             "(default: the codec's limit, 2^28)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.command == "info":
        return _info(args)
    if args.batch < 1:
        print(f"ditic {args.command}: error: --batch must be at least 1, got {args.batch}", file=sys.stderr)
        return 2
    return _compress(args) if args.command == "compress" else _decompress(args)


# ----------------------------------------------------------------------------- helpers


class _Report:
    """Per-file outcomes of one command: error lines on stderr, counts for the summary."""

    def __init__(self, command: str) -> None:
        self.command, self.failed, self.done = command, 0, 0
        self.start = time.perf_counter()

    def error(self, path: Path, e: BaseException) -> None:
        if os.environ.get("DITIC_DEBUG"):
            raise e
        self.failed += 1
        reason = str(e) if isinstance(e, ValueError | OSError) else f"{type(e).__name__}: {e}"
        print(f"ditic {self.command}: {path}: {reason}", file=sys.stderr)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def _load(args: argparse.Namespace) -> Any:
    import torch

    from codec.api import load_codec

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    codec = load_codec(args.model, device=device, decoder=getattr(args, "decoder", None))
    if getattr(args, "max_pixels", None):
        codec.max_pixels = int(args.max_pixels)
    if not codec.trained:
        print(f"ditic {args.command}: warning: model {codec.name!r} is untrained; decoded images will not "
              "resemble the inputs", file=sys.stderr)  # fmt: skip
    return codec


def _outputs(inputs: list[Path], out_dir: Path, suffix: str, report: _Report) -> list[tuple[Path, Path]]:
    """(input, output) pairs; an input whose output name another input already took is an error."""
    pairs, taken = [], {}
    for path in inputs:
        target = out_dir / (path.stem + suffix)
        if target in taken:
            report.error(path, ValueError(f"output {target} would overwrite the output of {taken[target]}"))
            continue
        taken[target] = path
        pairs.append((path, target))
    return pairs


def _write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _batches(pairs: list, size: int) -> Iterator[list]:
    for i in range(0, len(pairs), size):
        yield pairs[i : i + size]


def _run_batch(items: list, call: Callable[[list], list], report: _Report) -> list:
    """``call`` on the whole batch of ``((path, target), x)``; if it fails, item by item so that only
    the bad ones are reported."""
    try:
        return list(zip(items, call([x for _, x in items]), strict=True))
    except Exception:  # isolate the culprit below
        if len(items) == 1 and os.environ.get("DITIC_DEBUG"):
            raise
    results = []
    for key, x in items:
        try:
            results += [((key, x), y) for y in call([x])]
        except Exception as e:  # one file's failure never stops the others
            report.error(key[0], e)
    return results


def _progress(total: int, command: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=command, unit="file", disable=None if total > 1 else True, file=sys.stderr)


# ----------------------------------------------------------------------------- compress


def _read_images(pairs: list[tuple[Path, Path]], max_pixels: int, report: _Report) -> list:
    from codec.image import open_image

    images = []
    for path, target in pairs:
        try:
            images.append(((path, target), open_image(path.read_bytes(), max_pixels=max_pixels)))
        except Exception as e:
            report.error(path, e)
    return images


def _compress(args: argparse.Namespace) -> int:
    report = _Report("compress")
    codec = _load(args)
    quality = codec.qualities[len(codec.qualities) // 2] if args.quality is None else args.quality
    if quality not in codec.qualities:
        print(f"ditic compress: error: quality {quality} is not one of {codec.name}'s {codec.qualities}",
              file=sys.stderr)  # fmt: skip
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    pairs = _outputs(args.inputs, args.output, ".dtic", report)
    bpps, bytes_in, bytes_out = [], 0, 0
    with _progress(len(pairs), "compress") as bar:
        for batch in _batches(pairs, args.batch):
            images = _read_images(batch, codec.max_pixels, report)
            for ((path, target), _), item in _run_batch(
                images, lambda x: codec.encode_items(x, quality), report
            ):
                _write_atomic(target, lambda tmp, item=item: tmp.write_bytes(item.payload))
                bpps.append(item.bpp)
                bytes_in, bytes_out = bytes_in + path.stat().st_size, bytes_out + len(item.payload)
            bar.update(len(batch))
    mean_bpp = sum(bpps) / len(bpps) if bpps else 0.0
    counts = f"compressed {len(bpps)} of {len(args.inputs)} files at quality {quality}"
    print(f"{counts}: {bytes_in} -> {bytes_out} bytes, mean {mean_bpp:.4f} bpp, {report.seconds:.1f} s")
    return 1 if report.failed else 0


# ----------------------------------------------------------------------------- decompress


def _save_png(image: Any, path: Path) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    xmp = image.info.get("xmp")
    if xmp:
        info.add_itxt("XML:com.adobe.xmp", bytes(xmp).decode("utf-8", "replace"))
    options = {k: image.info[k] for k in ("icc_profile", "exif") if image.info.get(k)}
    image.save(path, "PNG", pnginfo=info, **options)


def _decompress(args: argparse.Namespace) -> int:
    report = _Report("decompress")
    codec = _load(args)
    args.output.mkdir(parents=True, exist_ok=True)
    pairs = _outputs(args.inputs, args.output, ".png", report)
    written = 0
    with _progress(len(pairs), "decompress") as bar:
        for batch in _batches(pairs, args.batch):
            payloads = []
            for path, target in batch:
                try:
                    payloads.append(((path, target), path.read_bytes()))
                except OSError as e:
                    report.error(path, e)
            for ((_, target), _), item in _run_batch(payloads, codec.decode_items, report):
                _write_atomic(target, lambda tmp, item=item: _save_png(item.image, tmp))
                written += 1
            bar.update(len(batch))
    print(f"decompressed {written} of {len(args.inputs)} files, {report.seconds:.1f} s")
    return 1 if report.failed else 0


# ----------------------------------------------------------------------------- info


def _describe(path: Path, data: bytes) -> dict[str, Any]:
    from codec import bitstream

    header, strings, metadata = bitstream.unpack(data)
    return {
        "file": str(path),
        **header.to_dict(),
        "coded_width": header.coded_width,
        "coded_height": header.coded_height,
        "payload_bytes": len(data),
        "bpp": 8 * len(data) / (header.width * header.height),
        "string_bytes": [len(s) for s in strings],
        "metadata_bytes": {tag: len(d) for tag, d in metadata.items()},
    }


def _human(d: dict[str, Any]) -> str:
    meta = ", ".join(f"{tag.strip()} {n} B" for tag, n in d["metadata_bytes"].items()) or "none"
    return "\n".join([
        f"{d['file']}: DiT-IC payload v{d['version']}, {d['payload_bytes']} bytes, {d['bpp']:.4f} bpp",
        f"  image    {d['width']}x{d['height']} {d['mode']} (source {d['source_mode']}, "
        f"{d['bit_depth']}-bit), coded at {d['coded_width']}x{d['coded_height']}",
        f"  model    {d['model_id']}, quality {d['quality']}",
        f"  strings  {len(d['string_bytes'])}: {', '.join(f'{n} B' for n in d['string_bytes'])}",
        f"  metadata {meta}",
    ])  # fmt: skip


def _info(args: argparse.Namespace) -> int:
    report = _Report("info")
    for path in args.payloads:
        try:
            d = _describe(path, path.read_bytes())
        except Exception as e:
            report.error(path, e)
            continue
        print(json.dumps(d) if args.json else _human(d))
    return 1 if report.failed else 0
