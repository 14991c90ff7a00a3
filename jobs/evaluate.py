"""``ditic evaluate DATASET``: rate–quality evaluation of DiT-IC against JPEG, WebP, AVIF and JPEG XL.

For every image and every rate point of every codec: bits per pixel, PSNR (RGB), MS-SSIM,
ST-LPIPS (AlexNet; DiT-IC trains on the VGG variant, so Alex keeps the evaluation honest) and
encode/decode milliseconds. Written to ``--out``: ``<codec>.json`` (CompressAI schema, means per
rate point), ``per_image.csv`` / ``.parquet``, ``bd_rate.json`` (BD-rates against ``--anchor``),
``rd_*.png`` and ``summary.md``. ``--fid`` adds FID on 256² patches when the data set has enough.

Images are processed one at a time (batch 1, the latency users see) and image-major, so only one
image's reference features are held in memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codec.errors import InputImageError
from codec.metrics import MS_SSIM_MIN_SIDE, bits_per_pixel, ms_ssim, psnr
from codec.perceptual import STLPIPS, to_unit_range
from jobs import evaluate_fid as fid_lib
from jobs.evaluate_codecs import Contender, make_contender
from jobs.evaluate_report import (
    bd_table,
    markdown,
    rate_points,
    write_codec_json,
    write_plots,
    write_rows,
)

__all__ = ["EvaluationResult", "add_arguments", "evaluate", "load_images", "parse_qualities", "run"]

DEFAULT_CODECS = "ditic-small,jpeg,webp,avif,jxl"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    parser.add_argument("dataset", help="folder, glob, Parquet work list or object-store URL of images")
    parser.add_argument("--codecs", default=DEFAULT_CODECS,
                        help=f"comma-separated codecs: jpeg, webp, avif, jxl, a DiT-IC config name or a "
                             f".safetensors checkpoint (default {DEFAULT_CODECS})")
    parser.add_argument("--qualities", action="append", default=[], metavar="[CODEC=]Q1,Q2,...",
                        help="rate points: 'avif=0,20,40' for one codec, '1,2,3' for all; repeatable "
                             "(default: each codec's own sweep)")
    parser.add_argument("--out", default="out/evaluate", help="output folder (default out/evaluate)")
    parser.add_argument("--device", default="cpu", help="torch device for DiT-IC and the metrics")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="DiT-IC compute dtype")
    parser.add_argument("--anchor", default="avif", help="BD-rate anchor codec (default avif)")
    parser.add_argument("--fid", action="store_true", help="also FID on 256x256 patches (needs >= 2048)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--storage-options", default=None, help="fsspec options as JSON")


def parse_qualities(specs: list[str], codecs: list[str]) -> dict[str, list[int]]:
    """``["avif=0,20", "5,10"]`` -> per-codec quality lists (a bare list applies to every codec)."""
    out: dict[str, list[int]] = {}
    for spec in specs:
        name, _, values = spec.rpartition("=")
        try:
            qualities = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--qualities {spec!r}: expected [CODEC=]Q1,Q2,... with integers") from None
        if not qualities:
            raise ValueError(f"--qualities {spec!r} lists no quality")
        if name and name not in codecs:
            raise ValueError(f"--qualities {spec!r} names {name!r}, which is not in --codecs {codecs}")
        for codec in [name] if name else codecs:
            out[codec] = qualities
    return out


def load_images(
    dataset: str, storage_options: dict[str, Any] | None = None, limit: int | None = None
) -> list[tuple[str, np.ndarray]]:
    """``(key, H×W×3 uint8)`` for each image of ``dataset``, sorted by key, upright (EXIF), RGB."""
    from codec.image import open_image, prepare
    from pipeline.sources import list_sources
    from pipeline.storage import open_location, read_bytes

    table = list_sources(dataset, storage_options)
    keys, uris = table.column("key").to_pylist(), table.column("source_uri").to_pylist()
    if limit is not None:
        keys, uris = keys[:limit], uris[:limit]
    if not keys:
        raise InputImageError(f"no images found at {dataset}")
    images = []
    for key, uri in zip(keys, uris, strict=True):
        location = open_location(uri, storage_options)
        data = read_bytes(location.fs, location.root)
        images.append((key, prepare(open_image(data)).rgb))
    return images


class Scorer:
    """Full-reference metrics of decoded images against one reference (kept with its ST-LPIPS
    features, computed once per image)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.lpips = STLPIPS("alex").to(self.device)

    def _tensor(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].to(self.device)  # a writable copy

    @torch.no_grad()
    def set_reference(self, rgb: np.ndarray) -> None:
        self.reference = self._tensor(rgb)
        self.features = self.lpips.features(to_unit_range(self.reference))

    @torch.no_grad()
    def score(self, decoded: np.ndarray) -> dict[str, float]:
        x_hat = self._tensor(decoded)
        distance = self.lpips.distance(self.features, self.lpips.features(to_unit_range(x_hat)))
        return {
            "psnr": psnr(self.reference, x_hat).item(),
            "ms_ssim": ms_ssim(self.reference, x_hat).item(),
            "st_lpips": distance.item(),
        }


@dataclass
class EvaluationResult:
    rows: list[dict[str, Any]]
    curves: dict[str, list[dict[str, Any]]]
    bd: dict[str, dict[str, float | None]]
    notes: list[str]
    files: list[Path] = field(default_factory=list)
    fid: dict[str, list[float | None]] = field(default_factory=dict)


def _code_one_image(
    key: str, rgb: np.ndarray, contenders: list[Contender], qualities: dict[str, list[int]],
    scorer: Scorer, fid_features: dict[tuple[str, int], list[np.ndarray]] | None,
    inception: fid_lib.InceptionFeatures | None,
) -> list[dict[str, Any]]:
    scorer.set_reference(rgb)
    height, width = rgb.shape[:2]
    rows = []
    for contender in contenders:
        for quality in qualities.get(contender.name, contender.qualities):
            coded = contender.code([rgb], quality)[0]
            rows.append({
                "codec": contender.name, "quality": quality, "key": key, "width": width, "height": height,
                "bytes": coded.num_bytes, "bpp": bits_per_pixel(coded.num_bytes, width, height),
                **scorer.score(coded.image), "enc_ms": coded.enc_ms, "dec_ms": coded.dec_ms,
            })  # fmt: skip
            if fid_features is not None and inception is not None:
                features = inception(fid_lib.patches(coded.image))
                fid_features.setdefault((contender.name, quality), []).append(features)
    return rows


def _fid_plan(images: list[tuple[str, np.ndarray]], wanted: bool, notes: list[str]) -> bool:
    if not wanted:
        return False
    total = sum(fid_lib.count_patches(rgb.shape[1], rgb.shape[0]) for _, rgb in images)
    if total < fid_lib.MIN_PATCHES:
        notes.append(f"FID: not enough patches ({total} < {fid_lib.MIN_PATCHES} of 256x256); not reported")
        return False
    notes.append(f"FID on {total} 256x256 patches (aligned grid + grid shifted by 128 px)")
    return True


def evaluate(
    dataset: str, codecs: list[str], out: str | Path, *, qualities: dict[str, list[int]] | None = None,
    device: str = "cpu", dtype: torch.dtype = torch.float32, anchor: str = "avif", fid: bool = False,
    limit: int | None = None, storage_options: dict[str, Any] | None = None, log: Any = None,
) -> EvaluationResult:
    """Run the evaluation and write every output file under ``out``; see the module docstring."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = load_images(dataset, storage_options, limit)
    contenders = [make_contender(name, device, dtype) for name in codecs]
    scorer, notes = Scorer(device), [f"{len(images)} images from {dataset}"]
    use_fid = _fid_plan(images, fid, notes)
    inception = fid_lib.InceptionFeatures() if use_fid else None
    reference_features: list[np.ndarray] = []
    fid_features: dict[tuple[str, int], list[np.ndarray]] | None = {} if use_fid else None
    rows: list[dict[str, Any]] = []
    for i, (key, rgb) in enumerate(images, 1):
        if log:
            print(f"evaluate: [{i}/{len(images)}] {key} {rgb.shape[1]}x{rgb.shape[0]}", file=log, flush=True)
        if inception is not None:
            reference_features.append(inception(fid_lib.patches(rgb)))
        rows += _code_one_image(key, rgb, contenders, qualities or {}, scorer, fid_features, inception)
    return _report(rows, contenders, anchor, notes, out_dir, dataset, reference_features, fid_features)


def _fid_scores(
    contenders: list[Contender], curves: dict[str, list[dict[str, Any]]], reference: list[np.ndarray],
    features: dict[tuple[str, int], list[np.ndarray]],
) -> dict[str, list[float | None]]:
    ref = np.concatenate(reference)
    return {
        c.name: [fid_lib.frechet_distance(ref, np.concatenate(features[(c.name, p["quality"])]))
                 for p in curves[c.name]]
        for c in contenders
    }


def _report(
    rows: list[dict[str, Any]], contenders: list[Contender], anchor: str, notes: list[str], out_dir: Path,
    dataset: str, reference: list[np.ndarray], fid_features: dict[tuple[str, int], list[np.ndarray]] | None,
) -> EvaluationResult:
    curves = {c.name: rate_points(rows, c.name) for c in contenders}
    small = len({r["key"] for r in rows if min(r["width"], r["height"]) < MS_SSIM_MIN_SIDE})
    if small:
        notes.append(f"MS-SSIM undefined for {small} image(s) under {MS_SSIM_MIN_SIDE} px: not in its means")
    fid = _fid_scores(contenders, curves, reference, fid_features) if fid_features else {}
    files = []
    for c in contenders:
        extra = {"fid": fid[c.name]} if fid else {}
        path = out_dir / f"{c.name.replace(':', '-')}.json"  # ditic-small:fidelity -> a portable file name
        write_codec_json(path, c.name, c.description, curves[c.name], extra)
        files.append(path)
    write_rows(rows, out_dir)
    bd = bd_table(curves, anchor) if anchor in curves else {}
    if anchor not in curves:
        notes.append(f"no BD-rates: the anchor {anchor!r} was not evaluated")
    bd_json = {"anchor": anchor, "method": "pchip", "bd": bd}
    (out_dir / "bd_rate.json").write_text(json.dumps(bd_json, indent=2, allow_nan=False) + "\n")
    try:
        files += write_plots(curves, out_dir, f"{dataset} ({len({r['key'] for r in rows})} images)")
    except ModuleNotFoundError as e:  # e.g. a GPU machine without the eval extra: numbers still count
        notes.append(f"no plots: {e.name} is not installed (pip install matplotlib)")
    (out_dir / "summary.md").write_text(markdown(curves, bd, anchor, notes))
    files += [out_dir / n for n in ("per_image.csv", "per_image.parquet", "bd_rate.json", "summary.md")]
    return EvaluationResult(rows, curves, bd, notes, files, fid)


def run(args: argparse.Namespace) -> int:
    from pipeline.storage import parse_storage_options

    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    if not codecs:
        raise ValueError("--codecs is empty")
    result = evaluate(
        args.dataset, codecs, args.out, qualities=parse_qualities(args.qualities, codecs),
        device=args.device, dtype=DTYPES[args.dtype], anchor=args.anchor, fid=args.fid, limit=args.limit,
        storage_options=parse_storage_options(args.storage_options), log=sys.stderr,
    )  # fmt: skip
    print((Path(args.out) / "summary.md").read_text(), end="")
    print(f"wrote {len(result.files)} files to {args.out}")
    return 0
