"""``ditic bench``'s plots (matplotlib, from the ``eval`` extra; without it the bench writes every number
and says "no plots").

codec mode: per point (model, dtype, size, batch, decode budget): images/s per GPU of encode and decode,
and the decode's latency p50 with its stage split where measured. pipeline mode: images/s against GPUs
(steady state, whole run and the codec inside the actors) with the linear line through the fewest GPUs'
run when several counts ran, else the rates side by side.
"""

from __future__ import annotations

from pathlib import Path

STAGES = (("entropy_ms", "entropy"), ("heads_dit_ms", "heads+DiT"), ("vae_decode_ms", "DC-AE"),
          ("to_host_ms", "to host"))  # fmt: skip


def write_plot(rows: list[dict], path: Path, title: str) -> Path | None:
    """Draw ``rows`` (one mode's) into ``path`` (PNG); None, with nothing written, without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pipeline = "end_to_end_over_codec_only" in rows[0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    (_pipeline if pipeline else _codec)(rows, axes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(r: dict) -> str:
    budget = f" {r['decode_budget']}" if "decode_budget" in r else ""
    return f"{r['model']} {r['dtype']}\n{r['width']}x{r['height']} b{r['batch']}{budget}"


def _codec(rows: list[dict], axes) -> None:  # noqa: ANN001
    import numpy as np

    x = np.arange(len(rows))
    rates, latency = axes
    for offset, kind in ((-0.2, "enc"), (0.2, "dec")):
        rates.bar(x + offset, [r[f"{kind}_images_s"] for r in rows], width=0.4, label=f"{kind}ode")
    rates.set_ylabel("images/s per GPU")
    rates.set_title("throughput (median batch time)")
    has_split = np.array([all(r.get(k) is not None for k, _ in STAGES) for r in rows])
    bottom = np.zeros(len(rows))
    if has_split.any():  # the stages of the rows that timed them (batch 1), stacked
        for key, name in STAGES:
            values = np.array([r[key] if split else 0.0 for r, split in zip(rows, has_split, strict=True)])
            latency.bar(x, values, bottom=bottom, width=0.6, label=name)
            bottom += values
        latency.plot(x[has_split], [r["dec_ms_p50"] for r in np.array(rows)[has_split]], "k_", markersize=30,
                     label="whole decode p50")  # fmt: skip
    if not has_split.all():
        plain = ~has_split
        latency.bar(x[plain], [r["dec_ms_p50"] for r in np.array(rows)[plain]], width=0.6, color="gray",
                    label="decode p50 (no stage split)")  # fmt: skip
    latency.set_ylabel("ms per image")
    latency.set_title("decode latency" + (" (stages timed apart)" if has_split.any() else ""))
    for ax in axes:
        ax.set_xticks(x, [_label(r) for r in rows], fontsize=7)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)


def _pipeline(rows: list[dict], axes) -> None:  # noqa: ANN001
    import numpy as np

    rates, ratio = axes
    keys = (("steady_images_per_s", "steady state"), ("end_to_end_images_per_s", "whole run"),
            ("codec_images_per_s", "codec in the actors"))  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["dtype"], r["width"], r["height"], r["batch"]), []).append(r)
    if any(len(g) > 1 for g in groups.values()):
        for (model, dtype, w, h, b), group in groups.items():
            group = sorted(group, key=lambda r: r["gpus"])
            gpus = [r["gpus"] for r in group]
            for key, name in keys:
                rates.plot(gpus, [r[key] for r in group], "o-", label=f"{model} {dtype} {w}x{h} b{b}: {name}")
            base = group[0]
            ideal = [base["steady_images_per_s"] * n / base["gpus"] for n in gpus]
            rates.plot(gpus, ideal, "k:", label="linear from the fewest GPUs (steady)")
            ratio.plot(gpus, [r.get("scaling_steady", float("nan")) for r in group], "o-", label="steady")
            ratio.plot(gpus, [n / base["gpus"] for n in gpus], "k:", label="linear")
        counts = sorted({r["gpus"] for r in rows})
        for ax in axes:
            ax.set_xlabel("GPUs")
            ax.set_xticks(counts)
        ratio.set_ylabel("× the fewest GPUs' run")
        ratio.set_title("scaling")
    else:
        x = np.arange(len(rows))
        for i, (key, name) in enumerate(keys):
            rates.bar(x + (i - 1) * 0.25, [r[key] for r in rows], width=0.25, label=name)
        rates.set_xticks(x, [_label(r) for r in rows], fontsize=7)
        ratio.bar(x, [r["steady_over_codec_only"] for r in rows], width=0.5, label="steady / codec-only")
        ratio.set_xticks(x, [_label(r) for r in rows], fontsize=7)
        ratio.set_title("pipeline over the codec alone")
    rates.set_ylabel("images/s")
    rates.set_title("pipeline throughput")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
