"""BD-rates of an existing ``ditic evaluate`` result against another anchor, without re-coding anything.

    python tools/bd_from_rows.py docs/training/run3-dev/per_image.csv --anchor ditic-small-run1

Reads the per-image rows that ``ditic evaluate`` wrote (``per_image.csv`` or ``.parquet``), builds the
same rate points and the same BD table as the job (``jobs.evaluate_report``), and prints it as JSON.
``--pairs A:QA=B:QB`` adds a per-image comparison of two rate points (e.g. two models at about the
same bpp), with how many images each metric favours. ``--plots DIR`` writes the job's plots of all the rows'
codecs (e.g. one run's model rows concatenated with an earlier run's classical rows).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.evaluate_report import bd_table, rate_points, write_plots  # noqa: E402

NUMERIC = ("quality", "width", "height", "bytes", "bpp", "psnr", "ms_ssim", "st_lpips", "enc_ms", "dec_ms")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of ``per_image.csv`` (numbers parsed, empty cells as NaN) or ``per_image.parquet``."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        for key in NUMERIC:
            if key in row:
                row[key] = float(row[key]) if row[key] not in ("", "nan", "NaN") else math.nan
        row["quality"] = int(row["quality"])
    return rows


def compare_pair(rows: list[dict[str, Any]], spec: str) -> dict[str, Any]:
    """``A:QA=B:QB`` -> per-image B − A for bpp, PSNR, MS-SSIM and ST-LPIPS, and win counts for B."""
    try:
        (a, qa), (b, qb) = (side.rsplit(":", 1) for side in spec.split("="))
        first = {r["key"]: r for r in rows if r["codec"] == a and r["quality"] == int(qa)}
        second = {r["key"]: r for r in rows if r["codec"] == b and r["quality"] == int(qb)}
    except ValueError:
        raise ValueError(f"--pairs {spec!r}: expected CODEC:Q=CODEC:Q") from None
    keys = sorted(first.keys() & second.keys())
    if not keys:
        raise ValueError(f"--pairs {spec!r}: no image has both rate points")
    metrics = ("bpp", "psnr", "ms_ssim", "st_lpips")
    deltas = {k: {m: second[k][m] - first[k][m] for m in metrics} for k in keys}
    wins = {
        "psnr": sum(d["psnr"] > 0 for d in deltas.values()),
        "ms_ssim": sum(d["ms_ssim"] > 0 for d in deltas.values()),
        "st_lpips": sum(d["st_lpips"] < 0 for d in deltas.values()),
    }
    return {"pair": spec, "images": len(keys), f"{b} better on": wins, "delta (second - first)": deltas}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rows", help="per_image.csv or per_image.parquet of a ditic evaluate run")
    p.add_argument("--anchor", required=True, help="the codec every other one is compared with")
    p.add_argument("--pairs", action="append", default=[], metavar="A:QA=B:QB")
    p.add_argument("--plots", metavar="DIR", help="also write the job's rate-quality plots (PNG) here")
    p.add_argument("--title", default="rate-quality", help="the plots' title")
    args = p.parse_args(argv)
    rows = read_rows(args.rows)
    codecs = sorted({r["codec"] for r in rows})
    if args.anchor not in codecs:
        raise SystemExit(f"--anchor {args.anchor!r} is not among the codecs {codecs}")
    curves = {c: rate_points(rows, c) for c in codecs}
    out = {"anchor": args.anchor, "method": "pchip", "bd": bd_table(curves, args.anchor),
           "pairs": [compare_pair(rows, spec) for spec in args.pairs]}  # fmt: skip
    if args.plots:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        out["plots"] = [str(path) for path in write_plots(curves, Path(args.plots), args.title)]
    print(json.dumps(out, indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
