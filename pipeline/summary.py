"""Job summaries: totals over the committed manifests, per-shard statistics, a readable table.

The totals are always recomputed from the manifests (the committed truth), so a resumed job
reports the whole archive, not only its last run; the ``run`` part says what the last run did.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifest import ArchiveLayout, manifest_bytes, read_manifests
from pipeline.storage import Location, write_bytes_atomic

__all__ = ["summarize", "write_summary", "format_summary"]

SHARD_FIELDS = {
    "shard": pa.string(), "items": pa.int64(), "ok": pa.int64(), "error": pa.int64(),
    "bytes_in": pa.int64(), "bytes_out": pa.int64(), "write_s": pa.float64(), "wall_s": pa.float64(),
    "images_per_s": pa.float64(), "committed_at": pa.float64(), "manifest": pa.string(),
}  # fmt: skip


def _mean(column: pa.ChunkedArray) -> float | None:
    value = pc.mean(column).as_py() if len(column) else None
    return None if value is None or not math.isfinite(value) else float(value)


def summarize(location: Location, run: dict[str, Any]) -> dict[str, Any]:
    """The job summary of the archive at ``location``; ``run`` describes the last run."""
    from pipeline.archive import shard_statistics

    table = read_manifests(location)
    ok = table.filter(pc.equal(table["status"], "ok"))
    wall = float(run.get("wall_s") or 0)
    summary = {
        "archive": location.url,
        "items": table.num_rows,
        "ok": ok.num_rows,
        "error": table.num_rows - ok.num_rows,
        "bytes_in": int(pc.sum(table["source_bytes"]).as_py() or 0),
        "bytes_out": int(pc.sum(table["payload_bytes"]).as_py() or 0),
        "mean_bpp": _mean(ok["bpp"]),
        "mean_psnr": _mean(ok["psnr"]),
        "mean_ms_ssim": _mean(ok["ms_ssim"]),
        "model_ids": sorted(set(ok["model_id"].to_pylist())),
        "images_per_s": run.get("submitted", 0) / wall if wall > 0 else None,
        "errors": _error_sample(table),
        "run": run,
    }
    summary["shards"] = shard_statistics(location)
    return summary


def _error_sample(table: pa.Table, limit: int = 20) -> list[dict[str, str]]:
    errors = table.filter(pc.equal(table["status"], "error")).select(["key", "error"])
    return errors.slice(0, limit).to_pylist()


def write_summary(location: Location, summary: dict[str, Any]) -> None:
    """``DEST/summary.json`` (the job) and ``DEST/summary.parquet`` (one row per shard)."""
    layout = ArchiveLayout(location)
    fs = location.fs
    data = json.dumps({k: v for k, v in summary.items() if k != "shards"}, indent=2, default=str).encode()
    write_bytes_atomic(fs, f"{layout.staging}/summary.json", layout.summary("json"), data)
    columns = {
        name: pa.array([_typed(s.get(name), kind) for s in summary["shards"]], kind)
        for name, kind in SHARD_FIELDS.items()
    }
    table = pa.table(columns)
    write_bytes_atomic(
        fs, f"{layout.staging}/summary.parquet", layout.summary("parquet"), manifest_bytes(table)
    )


def _typed(value: Any, kind: pa.DataType) -> Any:
    if value is None or value == "":
        return None
    if pa.types.is_integer(kind):
        return int(float(value))
    if pa.types.is_floating(kind):
        return float(value)
    return str(value)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def format_summary(summary: dict[str, Any]) -> str:
    """A short, aligned table of the summary, for the terminal."""
    run = summary.get("run", {})

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    ratio = summary["bytes_in"] / summary["bytes_out"] if summary["bytes_out"] else None
    lines = [
        ("archive", summary["archive"]),
        ("items", f"{summary['items']}  (ok {summary['ok']}, failed {summary['error']})"),
        ("this run", f"{run.get('submitted', 0)} submitted, {run.get('skipped', 0)} already committed"),
        ("bytes in / out", f"{_size(summary['bytes_in'])} / {_size(summary['bytes_out'])}"
                           f"  (ratio {number(ratio, '.1f')})"),
        ("mean bpp", number(summary["mean_bpp"], ".4f")),
        ("mean PSNR / MS-SSIM",
         f"{number(summary['mean_psnr'], '.2f')} dB / {number(summary['mean_ms_ssim'], '.4f')}"),
        ("wall time", f"{number(run.get('wall_s'), '.1f')} s"),
        ("images/s", number(summary["images_per_s"], ".2f")),
        ("shards", str(len(summary.get("shards", [])))),
    ]  # fmt: skip
    width = max(len(name) for name, _ in lines)
    text = "\n".join(f"  {name:<{width}}  {value}" for name, value in lines)
    errors = summary.get("errors") or []
    if errors:
        text += "\n  failed items:" + "".join(f"\n    {e['key']}: {e['error']}" for e in errors[:10])
    return text
