"""Plot a training run's log.jsonl (loss terms, bpp and PSNR per quality) for docs/TRAINING.md.

    python tools/plot_training.py runs/gpu/log.jsonl --out docs/img/training_small.png \\
        --title "ditic-small, 1×H100, 8 min"

Stages are shaded (A autoencoder, B full codec, C adversarial); the x axis is minutes of training.
The PNG stays well under 200 KB (100 dpi, no markers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGE_COLOURS = {"A": "#e8eef7", "B": "#ffffff", "C": "#f7ece8"}


def read_log(path: str | Path) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{path}: no rows")
    return rows


def _minutes(rows: list[dict]) -> list[float]:
    return [r["time_s"] / 60 for r in rows]


def _shade_stages(ax, rows: list[dict]) -> None:
    x = _minutes(rows)
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["stage"] != rows[start]["stage"]:
            left = x[start - 1] if start else 0.0
            ax.axvspan(left, x[i - 1], color=STAGE_COLOURS.get(rows[start]["stage"], "#fff"), zorder=0)
            ax.text(
                left,
                1.0,
                f" {rows[start]['stage']}",
                transform=ax.get_xaxis_transform(),
                va="top",
                fontsize=8,
            )
            start = i


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(m, r[key]) for m, r in zip(_minutes(rows), rows, strict=True) if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def _qualities(rows: list[dict]) -> list[int]:
    return sorted({int(k[5:]) for r in rows for k in r if k.startswith("bpp_q")})


def plot(rows: list[dict], out: Path, title: str) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=100, sharex=True)
    (ax_loss, ax_terms), (ax_bpp, ax_psnr) = axes
    for ax in axes.flat:
        _shade_stages(ax, rows)
        ax.grid(alpha=0.3)
    ax_loss.plot(*_series(rows, "loss"), lw=1)
    ax_loss.set_ylabel("total loss")
    ax_loss.set_yscale("log")
    for key in ("mse", "perceptual", "distill", "bpp", "gan_g"):
        xs, ys = _series(rows, key)
        if xs:
            ax_terms.plot(xs, ys, lw=1, label=key)
    ax_terms.set_yscale("log")
    ax_terms.legend(fontsize=8)
    ax_terms.set_ylabel("loss terms")
    for q in _qualities(rows):
        ax_bpp.plot(*_series(rows, f"bpp_q{q}"), lw=1, label=f"q{q}")
        ax_psnr.plot(*_series(rows, f"psnr_q{q}"), lw=1, label=f"q{q}")
    ax_psnr.plot(*_series(rows, "psnr"), lw=0.8, color="k", alpha=0.4, label="all")
    ax_bpp.set_ylabel("bpp (training crops)")
    ax_psnr.set_ylabel("PSNR dB (training crops)")
    ax_bpp.legend(fontsize=8)
    ax_psnr.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("minutes of training")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="log.jsonl of a run")
    p.add_argument("--out", required=True, help="PNG to write (docs/img/...)")
    p.add_argument("--title", default="training")
    args = p.parse_args(argv)
    plot(read_log(args.log), Path(args.out), args.title)
    size = Path(args.out).stat().st_size
    print(f"{args.out}: {size / 1024:.0f} KB")
    return 0 if size < 200 * 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
