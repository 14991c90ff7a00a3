"""``ditic restore`` / ``ditic extract`` / ``ditic verify``: read an archive back.

* ``restore DEST OUT``: decode every item to ``OUT/<key>.png`` on Ray (Decoder actors).
* ``extract DEST KEY -o FILE``: one item, by a ranged read of its shard, decoded here.
* ``verify DEST``: CRCs and manifests, no decoding; exit 1 on any problem.
"""

from __future__ import annotations

import argparse
import json

from codec.config import DECODERS
from pipeline.archive import verify_archive
from pipeline.restore import extract_item, restore_archive
from pipeline.storage import open_location, parse_storage_options


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dest", metavar="DEST", help="archive URL (s3://bucket/archive, a local folder)")
    parser.add_argument("--storage-options", default=None, metavar="JSON", help="fsspec options as JSON")


def _decoding(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model to decode with (default: the archive's)")
    parser.add_argument("--decoder", choices=DECODERS, default=None,
                        help="the model's DC-AE decoder to decode with: perceptual or fidelity (higher "
                             "PSNR, where the model ships one); default: the one the archive was written "
                             "with (perceptual unless its model was NAME:fidelity)")  # fmt: skip
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="refuse payloads above N pixels (bounds decoding memory for an untrusted "
                             "archive; default: the codec's limit, 2^28)")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    _common(parser)
    if command_name == "restore":
        parser.add_argument("out", metavar="OUT", help="folder (URL) to write the PNG files into")
        _decoding(parser)
        parser.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
        parser.add_argument("--batch-size", type=int, default=4, help="payloads per decode batch")
        parser.add_argument("--num-actors", type=int, default=None, help="decoder actors")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    elif command_name == "extract":
        parser.add_argument("key", metavar="KEY", help="the item's key (its path relative to SRC)")
        parser.add_argument("-o", "--output", required=True, metavar="FILE", help="PNG file to write")
        _decoding(parser)
    elif command_name == "verify":
        parser.add_argument("--manifests-only", action="store_true", help="skip reading the payloads")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _restore(args: argparse.Namespace) -> int:
    result = restore_archive(
        args.dest, args.out, model=args.model, device=args.device,
        storage_options=parse_storage_options(args.storage_options), address=args.address,
        batch_size=args.batch_size, num_actors=args.num_actors, progress=not args.no_progress,
        max_pixels=args.max_pixels, decoder=args.decoder,
    )  # fmt: skip
    print(
        f"restored {result['written']} of {result['items']} items to {args.out} in {result['wall_s']:.1f} s"
    )
    for failure in result["failed"][:20]:
        print(f"  failed: {failure['key']}: {failure['error']}")
    return 1 if result["failed"] else 0


def _extract(args: argparse.Namespace) -> int:
    options = parse_storage_options(args.storage_options)
    result = extract_item(args.dest, args.key, args.output, model=args.model, device=args.device,
                          storage_options=options, max_pixels=args.max_pixels,
                          decoder=args.decoder)  # fmt: skip
    print(
        f"{result['key']}: {result['width']}x{result['height']}, "
        f"{result['payload_bytes']} bytes -> {args.output}"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    location = open_location(args.dest, parse_storage_options(args.storage_options))
    report = verify_archive(location, check_payloads=not args.manifests_only)
    if args.json:
        print(json.dumps(report.__dict__ | {"passed": report.passed}, indent=2))
        return 0 if report.passed else 1
    print(f"{args.dest}: {report.manifests} manifests, {report.items} items (ok {report.ok}, "
          f"failed {report.errors}), {report.payloads_checked} payloads checked")  # fmt: skip
    for warning in report.warnings:
        print(f"  warning: {warning}")
    for problem in report.problems:
        print(f"  PROBLEM: {problem}")
    print("verify: OK" if report.passed else f"verify: FAILED ({len(report.problems)} problems)")
    return 0 if report.passed else 1


def run(args: argparse.Namespace) -> int:
    handlers = {"restore": _restore, "extract": _extract, "verify": _verify}
    return handlers[args.command](args)
