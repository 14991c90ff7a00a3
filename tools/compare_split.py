"""Judge candidate models against a base at matched rates, from ``tools/split_quality.py`` JSON.

    python tools/compare_split.py BASE_split.json CAND_split.json [CAND2_split.json ...]

Session 10's rule compared the mean PSNR and ST-LPIPS over q1–q4, which is fair only when the models
spend the same bits. A model with a wider y (session 11) spends more, so this compares the curves of
what the codec decodes (split_quality's ``full`` stage) over the bpp interval both cover: BD-PSNR
(mean PSNR gain, dB) and BD-ST-LPIPS (mean ST-LPIPS difference, Alex; negative is better), PCHIP in
log-bpp (jobs.evaluate_bdrate). The rule, committed before the runs it judges (docs/TRAINING.md):

* qualify if BD-ST-LPIPS <= -0.008 with BD-PSNR >= -0.05 dB, or BD-PSNR >= +0.05 dB with
  BD-ST-LPIPS <= +0.008 (session 10's thresholds, now at matched rates), over a shared interval at
  least 1.25x wide (top / bottom bpp);
* among those that qualify, the lowest BD-ST-LPIPS ships (session 11; ``--prefer stlpips``), or
  (session 12, ``--prefer psnr``, where ST-LPIPS against AVIF was won and PSNR was the bar still short)
  the highest BD-PSNR, the lower BD-ST-LPIPS among those within 0.05 dB of it.

Prints one JSON object per candidate and the verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.evaluate_bdrate import bd_quality  # noqa: E402

MIN_SPAN = 1.25  # the shared bpp interval's top / bottom
PSNR_TIE_DB = 0.05  # --prefer psnr: BD-PSNRs this close are a tie, broken by BD-ST-LPIPS


def curve(split: dict, stage: str = "full") -> tuple[list[float], list[float], list[float]]:
    """(bpp, PSNR, ST-LPIPS) per quality of one split_quality result, lowest bpp first."""
    rows = sorted(split["qualities"].values(), key=lambda r: r["bpp"])
    bpp = [r["bpp"] for r in rows]
    return bpp, [r[stage]["psnr"] for r in rows], [r[stage]["stlpips_alex"] for r in rows]


def compare(base: dict, cand: dict, stage: str = "full") -> dict:
    """BD-PSNR and BD-ST-LPIPS of ``cand`` against ``base`` over their shared bpp interval, and whether
    ``cand`` qualifies by the rule above."""
    rb, pb, lb = curve(base, stage)
    rc, pc, lc = curve(cand, stage)
    lo, hi = max(rb[0], rc[0]), min(rb[-1], rc[-1])
    out = {"model_id": cand.get("model_id"), "bpp": [round(r, 4) for r in rc], "shared_bpp": [lo, hi]}
    if hi < lo * MIN_SPAN:
        return {**out, "bd_psnr": None, "bd_stlpips": None, "qualifies": False,
                "why": f"shared bpp interval {lo:.4f}-{hi:.4f} is narrower than {MIN_SPAN}x"}
    bd_psnr = bd_quality(rb, pb, rc, pc)
    bd_lpips = bd_quality(rb, lb, rc, lc)  # test minus anchor: negative is better
    ok = (bd_lpips <= -0.008 and bd_psnr >= -0.05) or (bd_psnr >= 0.05 and bd_lpips <= 0.008)
    return {**out, "bd_psnr": round(bd_psnr, 4), "bd_stlpips": round(bd_lpips, 4), "qualifies": bool(ok),
            "why": "rule met" if ok else "rule not met"}


def pick(qualified: dict[str, dict], prefer: str = "stlpips") -> str | None:
    """The candidate that ships among those that qualify (``compare``'s results by name)."""
    if not qualified:
        return None
    if prefer == "psnr":
        top = max(r["bd_psnr"] for r in qualified.values())
        qualified = {k: r for k, r in qualified.items() if r["bd_psnr"] >= top - PSNR_TIE_DB}
    return min(qualified, key=lambda k: qualified[k]["bd_stlpips"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base")
    p.add_argument("candidates", nargs="+")
    p.add_argument("--stage", default="full", help="split_quality stage to compare (default: full)")
    p.add_argument("--prefer", choices=("stlpips", "psnr"), default="stlpips",
                   help="which qualifier ships: lowest BD-ST-LPIPS (session 11), or highest BD-PSNR with "
                        f"ties within {PSNR_TIE_DB} dB broken by BD-ST-LPIPS (session 12)")
    args = p.parse_args()
    base = json.loads(Path(args.base).read_text())
    results = {}
    for path in args.candidates:
        results[path] = compare(base, json.loads(Path(path).read_text()), args.stage)
        print(json.dumps({"candidate": path, **results[path]}))
    ok = {k: v for k, v in results.items() if v["qualifies"]}
    print(json.dumps({"ships": pick(ok, args.prefer), "prefer": args.prefer, "qualified": sorted(ok)}))


if __name__ == "__main__":
    main()
