"""tools/compare_split.py: the model-selection rule at matched rates, on recorded held-out curves."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare_split", ROOT / "tools" / "compare_split.py")
compare_split = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_split)


def split(name: str) -> dict:
    return json.loads((ROOT / "docs" / "training" / name / "split.json").read_text())


def test_a_model_against_itself_is_a_zero_and_does_not_qualify():
    base = split("session11/C96")
    r = compare_split.compare(base, base)
    assert r["bd_psnr"] == pytest.approx(0.0, abs=1e-6) and r["bd_stlpips"] == pytest.approx(0.0, abs=1e-6)
    assert not r["qualifies"]


def test_recorded_verdicts_session10_to_session14():
    # session 10's C10L failed against C25L (docs/TRAINING.md, session 11); session 12's C2g beat C96
    r = compare_split.compare(split("session10/C25L"), split("session10/C10L"))
    assert not r["qualifies"] and r["bd_psnr"] > 0.05 and r["bd_stlpips"] > 0.008
    r = compare_split.compare(split("session11/C96"), split("session12/C2g"))
    assert r["qualifies"] and r["bd_psnr"] > 0.2 and r["bd_stlpips"] < -0.008
    # session 13's C3 beat C2g on PSNR alone, its ST-LPIPS inside the guard (the second branch)
    r = compare_split.compare(split("session12/C2g"), split("session13/C3"))
    assert r["qualifies"] and r["bd_psnr"] > 0.25 and -0.008 < r["bd_stlpips"] < 0.008
    # session 14's C128 (y as wide as its latent block) beat C3 on both, over C3's whole range
    r = compare_split.compare(split("session13/C3"), split("session14/C128"))
    assert r["qualifies"] and r["bd_psnr"] > 0.3 and r["bd_stlpips"] < -0.008
    assert r["shared_bpp"][1] == pytest.approx(max(compare_split.curve(split("session13/C3"))[0]))


def test_recorded_verdict_session15_decoder_mixes():
    # session 15: Cx (C128 + more stage C) with 3/8 of A3's decoder ties the best PSNR (C128 at 1/2) and
    # keeps C128's ST-LPIPS, so it ships; at 1/2, Cx's mix crosses the ST-LPIPS guard
    base = split("session14/C128")
    mixes = {n: json.loads((ROOT / "docs/training/session15/mixes" / f"{n}.split.json").read_text())
             for n in ("C128_m500", "Cx_m375", "Cx_m500", "C128_m1000")}
    results = {n: compare_split.compare(base, m) for n, m in mixes.items()}
    assert results["C128_m1000"]["bd_psnr"] > 0.5 and not results["C128_m1000"]["qualifies"]
    assert not results["Cx_m500"]["qualifies"] and results["Cx_m500"]["bd_stlpips"] > 0.008
    assert abs(results["Cx_m375"]["bd_stlpips"]) < 0.001 and results["Cx_m375"]["bd_psnr"] > 0.2
    qualified = {n: r for n, r in results.items() if r["qualifies"]}
    assert sorted(qualified) == ["C128_m500", "Cx_m375"]
    assert compare_split.pick(qualified, "psnr") == "Cx_m375"


def test_recorded_verdict_session16_none_qualifies():
    # session 16: no candidate beats the shipped mix; the MSE-refitted decoders alone buy +0.73-0.75 dB
    # at +0.11-0.12 ST-LPIPS (a fidelity decoder, not a default); int8 storage of the shipped decoder is
    # a wash (+0.007 dB)
    base = json.loads((ROOT / "docs/training/session15/mixes/Cx_m375.split.json").read_text())
    folder = ROOT / "docs/training/session16/splits"
    results = {p.name.removesuffix(".split.json"): compare_split.compare(base, json.loads(p.read_text()))
               for p in sorted(folder.glob("*.split.json"))}  # fmt: skip
    candidates = {n: r for n, r in results.items() if not n.endswith("m1000") and not n.startswith("S16")}
    assert len(candidates) == 16 and not any(r["qualifies"] for r in candidates.values())
    alone = [r for n, r in results.items() if n.endswith("m1000")]
    assert len(alone) == 2 and all(r["bd_psnr"] > 0.7 and r["bd_stlpips"] > 0.1 for r in alone)
    assert abs(results["S16"]["bd_psnr"]) < 0.02 and abs(results["S16"]["bd_stlpips"]) < 0.001
    assert results["S16_fidelity"]["bd_psnr"] > 0.7


def test_pick_by_stlpips_or_by_psnr_with_a_tie_band():
    results = {
        "a": {"bd_psnr": 0.30, "bd_stlpips": -0.010},
        "b": {"bd_psnr": 0.27, "bd_stlpips": -0.012},  # within 0.05 dB of a: a tie, b's ST-LPIPS wins
        "c": {"bd_psnr": 0.10, "bd_stlpips": -0.040},  # best ST-LPIPS, far behind in PSNR
    }
    assert compare_split.pick(results, "stlpips") == "c"
    assert compare_split.pick(results, "psnr") == "b"
    assert compare_split.pick({k: results[k] for k in "ac"}, "psnr") == "a"
    assert compare_split.pick({}, "psnr") is None
