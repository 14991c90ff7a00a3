"""What ``ditic evaluate`` writes: per-image rows (CSV + Parquet), one CompressAI-style JSON per
codec (means per rate point), BD-rates against an anchor, rate–quality plots and a Markdown table.

CompressAI's schema: ``{"name", "description", "results": {"bpp": [...], "psnr-rgb": [...],
"ms-ssim": [...], ...}}``, one list entry per rate point, each the mean over the images, times in
seconds. Values that do not exist (MS-SSIM of a small image) are JSON ``null``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from jobs.evaluate_bdrate import bd_quality, bd_rate

__all__ = ["METRICS", "ROW_FIELDS", "bd_table", "markdown", "rate_points", "write_codec_json",
           "write_plots", "write_rows"]

# metric key -> (label, higher is better, per-image row field)
METRICS: dict[str, tuple[str, bool, str]] = {
    "psnr-rgb": ("PSNR (dB)", True, "psnr"),
    "ms-ssim": ("MS-SSIM", True, "ms_ssim"),
    "st-lpips": ("ST-LPIPS Alex (lower is better)", False, "st_lpips"),
}
ROW_FIELDS = ["codec", "quality", "key", "width", "height", "bytes", "bpp", "psnr", "ms_ssim", "st_lpips",
              "enc_ms", "dec_ms"]


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def rate_points(rows: list[dict[str, Any]], codec: str) -> list[dict[str, Any]]:
    """Per-quality means of one codec's rows, lowest bpp first."""
    points = []
    for quality in sorted({r["quality"] for r in rows if r["codec"] == codec}):
        group = [r for r in rows if r["codec"] == codec and r["quality"] == quality]
        point: dict[str, Any] = {"quality": quality, "images": len(group)}
        for field in ("bpp", "psnr", "ms_ssim", "st_lpips", "enc_ms", "dec_ms"):
            point[field] = _mean([r[field] for r in group])
        points.append(point)
    return sorted(points, key=lambda p: p["bpp"])


def write_codec_json(
    path: Path, name: str, description: str, points: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    """CompressAI-style results of one codec; ``extra`` adds keys to ``results`` (e.g. ``fid``)."""
    seconds = lambda ms: None if ms is None else ms / 1e3
    results: dict[str, Any] = {
        "quality": [p["quality"] for p in points],
        "bpp": [p["bpp"] for p in points],
        "psnr-rgb": [p["psnr"] for p in points],
        "ms-ssim": [p["ms_ssim"] for p in points],
        "st-lpips": [p["st_lpips"] for p in points],
        "encoding_time": [seconds(p["enc_ms"]) for p in points],
        "decoding_time": [seconds(p["dec_ms"]) for p in points],
        **extra,
    }
    data = {"name": name, "description": description, "results": results}
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return data


def write_rows(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """``per_image.csv`` and ``per_image.parquet``: one row per (codec, quality, image)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(out_dir / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in ROW_FIELDS} for r in rows)
    table = pa.Table.from_pylist([{k: r[k] for k in ROW_FIELDS} for r in rows])
    pq.write_table(table, out_dir / "per_image.parquet")


def _bd_values(metric: str) -> tuple[str, bool, Any]:
    _, higher, field = METRICS[metric]
    if metric == "ms-ssim":  # the usual dB form, -10·log10(1 − MS-SSIM), spreads the top end
        return field, True, lambda v: -10.0 * math.log10(max(1.0 - v, 1e-12))
    return field, higher, lambda v: v


def _curve(points: list[dict[str, Any]], metric: str) -> tuple[list[float], list[float]]:
    field, _, transform = _bd_values(metric)
    kept = [p for p in points if p[field] is not None and p["bpp"] is not None]
    return [p["bpp"] for p in kept], [transform(p[field]) for p in kept]


def _safe(fn: Any, *args: Any, **kwargs: Any) -> float | None:
    try:
        value = fn(*args, **kwargs)
    except ValueError:  # too few points for a curve
        return None
    return value if math.isfinite(value) else None


def bd_table(curves: dict[str, list[dict[str, Any]]], anchor: str) -> dict[str, dict[str, float | None]]:
    """``{codec: {"bd-rate <metric>": %, "bd-psnr": dB}}`` against ``anchor`` (PCHIP); None where the
    curves do not overlap or have too few points."""
    table: dict[str, dict[str, float | None]] = {}
    for codec, points in curves.items():
        if codec == anchor:
            continue
        row: dict[str, float | None] = {}
        for metric in METRICS:
            _, higher, _ = _bd_values(metric)
            ra, qa = _curve(curves[anchor], metric)
            rt, qt = _curve(points, metric)
            row[f"bd-rate {metric}"] = _safe(bd_rate, ra, qa, rt, qt, higher_is_better=higher)
        ra, qa = _curve(curves[anchor], "psnr-rgb")
        rt, qt = _curve(points, "psnr-rgb")
        row["bd-psnr"] = _safe(bd_quality, ra, qa, rt, qt)
        table[codec] = row
    return table


def write_plots(curves: dict[str, list[dict[str, Any]]], out_dir: Path, title: str) -> list[Path]:
    """One PNG per metric (``rd_<metric>.png``): quality against bpp (log axis), every codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    paths = []
    for metric, (label, _, field) in METRICS.items():
        fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=100)
        for codec, points in curves.items():
            kept = [p for p in points if p[field] is not None]
            if kept:
                ax.plot([p["bpp"] for p in kept], [p[field] for p in kept], marker="o", ms=3.5, label=codec)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator([0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"rd_{metric.replace('-', '_')}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(
    curves: dict[str, list[dict[str, Any]]], bd: dict[str, dict[str, float | None]], anchor: str,
    notes: list[str],
) -> str:
    """The rate points of every codec, then the BD table against ``anchor``, then ``notes``."""
    lines = ["| codec | quality | bpp | PSNR (dB) | MS-SSIM | ST-LPIPS ↓ | encode ms | decode ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for codec, points in curves.items():
        for p in points:
            lines.append(
                f"| {codec} | {p['quality']} | {_fmt(p['bpp'], 4)} | {_fmt(p['psnr'], 2)} | "
                f"{_fmt(p['ms_ssim'], 4)} | {_fmt(p['st_lpips'], 4)} | {_fmt(p['enc_ms'], 1)} | "
                f"{_fmt(p['dec_ms'], 1)} |"
            )
    if bd:
        lines += ["", f"BD-rate against {anchor} (%; negative = fewer bits for the same quality; PCHIP, "
                  "over the quality range both curves cover; MS-SSIM in dB) and BD-PSNR (dB):", "",
                  "| codec | BD-rate PSNR | BD-rate MS-SSIM | BD-rate ST-LPIPS | BD-PSNR (dB) |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for codec, row in bd.items():
            cells = [_fmt(row[f"bd-rate {m}"], 1) for m in METRICS] + [_fmt(row["bd-psnr"], 2)]
            lines.append(f"| {codec} | " + " | ".join(cells) + " |")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
