"""Bjøntegaard deltas on curves whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jobs.evaluate_bdrate import bd_quality, bd_rate, pchip_integral

ANCHOR_RATE = [0.08, 0.15, 0.3, 0.55, 0.9]
ANCHOR_PSNR = [27.1, 29.4, 31.9, 34.0, 36.2]


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_same_quality_at_80_percent_of_the_rate_is_minus_20_percent(method: str) -> None:
    test_rate = [0.8 * r for r in ANCHOR_RATE]
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, test_rate, ANCHOR_PSNR, method=method) == pytest.approx(-20.0)
    assert bd_rate(test_rate, ANCHOR_PSNR, ANCHOR_RATE, ANCHOR_PSNR, method=method) == pytest.approx(25.0)
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, ANCHOR_PSNR, method=method) == pytest.approx(0.0)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_constant_quality_offset_is_the_bd_quality(method: str) -> None:
    better = [q + 0.75 for q in ANCHOR_PSNR]
    assert bd_quality(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, better, method=method) == pytest.approx(0.75)
    lpips = [0.3, 0.22, 0.15, 0.1, 0.07]
    lower = [v - 0.02 for v in lpips]
    got = bd_quality(ANCHOR_RATE, lpips, ANCHOR_RATE, lower, method=method, higher_is_better=False)
    assert got == pytest.approx(0.02)  # lower LPIPS is better, so the gain is positive


def test_lines_in_log_rate_against_the_closed_form() -> None:
    # q = a + b·ln(r): ln r(q) = (q − a) / b, a line, which both fits reproduce exactly.
    a0, b0, a1, b1 = 40.0, 4.0, 41.0, 5.0
    rates = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
    q0, q1 = a0 + b0 * np.log(rates), a1 + b1 * np.log(rates)
    lo, hi = max(q0.min(), q1.min()), min(q0.max(), q1.max())
    mean_gap = lambda q: (q - a1) / b1 - (q - a0) / b0  # linear in q: its mean is at the midpoint
    expected = (math.exp(mean_gap((lo + hi) / 2)) - 1) * 100
    for method in ("pchip", "cubic"):
        assert bd_rate(rates, q0, rates, q1, method=method) == pytest.approx(expected, rel=1e-9)


def test_pchip_matches_scipy_reference_values() -> None:
    # Computed once with scipy.interpolate.PchipInterpolator(...).integrate on these
    # curves; scipy is not a dependency, so the numbers are stored here.
    test_rate, test_psnr = [0.05, 0.11, 0.24, 0.43, 0.8], [26.8, 29.6, 32.5, 34.6, 37.5]
    bumpy_rate, bumpy_psnr = [0.1, 0.2, 0.25, 0.5, 1.0, 1.1], [30, 31, 35, 35.5, 36, 40]
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, test_rate, test_psnr) == pytest.approx(-31.81884917414839)
    assert bd_quality(ANCHOR_RATE, ANCHOR_PSNR, test_rate, test_psnr) == pytest.approx(1.4581595202330102)
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, bumpy_rate, bumpy_psnr) == pytest.approx(-40.13291670909725)


def test_pchip_integral_of_a_line_and_order_independence() -> None:
    x = np.array([0.0, 1.0, 3.0, 4.0])
    assert pchip_integral(x, 2 * x + 1, 0.5, 3.5) == pytest.approx((3.5**2 + 3.5) - (0.5**2 + 0.5))
    shuffled = [2, 0, 4, 1, 3]
    r = [ANCHOR_RATE[i] for i in shuffled]
    q = [ANCHOR_PSNR[i] for i in shuffled]
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, r, q) == pytest.approx(0.0, abs=1e-12)


def test_no_overlap_gives_nan_and_bad_curves_raise() -> None:
    high = [q + 20 for q in ANCHOR_PSNR]
    assert math.isnan(bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, high))
    assert math.isnan(bd_quality(ANCHOR_RATE, ANCHOR_PSNR, [5.0, 6.0], [40.0, 41.0]))
    with pytest.raises(ValueError, match="at least 2 valid"):
        bd_rate(ANCHOR_RATE, ANCHOR_PSNR, [0.1, float("nan")], [30.0, 31.0])
    with pytest.raises(ValueError, match="at least 4 rate points"):
        bd_rate(ANCHOR_RATE, ANCHOR_PSNR, [0.1, 0.2, 0.3], [30.0, 31.0, 32.0], method="cubic")
    with pytest.raises(ValueError, match="distinct"):
        bd_rate(ANCHOR_RATE, ANCHOR_PSNR, [0.1, 0.2, 0.3], [30.0, 30.0, 32.0])
    with pytest.raises(ValueError, match="'pchip' or 'cubic'"):
        bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, ANCHOR_PSNR, method="linear")
