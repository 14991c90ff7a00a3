"""Bjøntegaard deltas: the average rate (or quality) difference between two rate–quality curves.

BD-rate (Bjøntegaard, VCEG-M33, 2001): fit log(rate) as a function of quality for each codec,
integrate both fits over the quality interval the two curves share, and report
``exp(mean difference) − 1`` in percent. Negative means the tested codec needs fewer bits than
the anchor for the same quality. BD-quality (e.g. BD-PSNR) swaps the roles: quality as a function
of log(rate), averaged over the shared rate interval; positive means better quality.

Two interpolations: ``"pchip"`` (piecewise cubic Hermite with Fritsch–Carlson slopes, the
JVET/VTM common-test-conditions choice, never overshoots between points) and ``"cubic"`` (one
least-squares cubic polynomial, the original 2001 recipe; needs ≥ 4 points). For a lower-is-better
quality (ST-LPIPS, FID) pass ``higher_is_better=False``: the sign convention stays "negative
BD-rate saves bits, positive BD-quality is better".
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = ["bd_rate", "bd_quality", "pchip_integral"]

Method = Literal["pchip", "cubic"]


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch–Carlson slopes at the knots (monotone where the data are)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    if len(x) == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros_like(y)
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    """One-sided three-point slope at an end, clipped to keep the end monotone."""
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return d


def pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """∫ from ``lo`` to ``hi`` of the PCHIP interpolant through (x, y); x strictly increasing."""
    d = _pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        # Cubic Hermite on [x_k, x_k+1] as a polynomial in s = (x − x_k): c0 + c1 s + c2 s² + c3 s³.
        c0, c1 = y[k], d[k]
        c2 = (3 * (y[k + 1] - y[k]) / h - 2 * d[k] - d[k + 1]) / h
        c3 = (d[k] + d[k + 1] - 2 * (y[k + 1] - y[k]) / h) / h**2
        antiderivative = np.poly1d([c3 / 4, c2 / 3, c1 / 2, c0, 0.0])
        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return float(total)


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: Method) -> float:
    if method == "pchip":
        return pchip_integral(x, y, lo, hi)
    if method == "cubic":
        if len(x) < 4:
            raise ValueError(f"the cubic fit needs at least 4 rate points, got {len(x)}")
        antiderivative = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
    raise ValueError(f"method must be 'pchip' or 'cubic', got {method!r}")


def _curve(rate: list[float], quality: list[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    r, q = np.asarray(rate, float), np.asarray(quality, float)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    if len(r) < 2:
        raise ValueError(f"{name} curve needs at least 2 valid (rate > 0, finite) points, got {len(r)}")
    return np.log(r), q


def _sorted_unique(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"{what} values must be distinct along a curve, got {x.tolist()}")
    return x, y


def bd_rate(
    anchor_rate: list[float],
    anchor_quality: list[float],
    test_rate: list[float],
    test_quality: list[float],
    *,
    method: Method = "pchip",
    higher_is_better: bool = True,
) -> float:
    """BD-rate of the test curve against the anchor, in percent (NaN if the quality ranges do not
    overlap). Points may come in any order; non-finite points are dropped."""
    ra, qa = _curve(anchor_rate, anchor_quality, "anchor")
    rt, qt = _curve(test_rate, test_quality, "test")
    if not higher_is_better:
        qa, qt = -qa, -qt
    diff = _mean_gap(qa, ra, qt, rt, method, "quality")
    return float((math.exp(diff) - 1.0) * 100.0)


def bd_quality(
    anchor_rate: list[float],
    anchor_quality: list[float],
    test_rate: list[float],
    test_quality: list[float],
    *,
    method: Method = "pchip",
    higher_is_better: bool = True,
) -> float:
    """Average quality gain of the test curve over the anchor across their shared rate range
    (BD-PSNR when quality is PSNR); positive is better. NaN if the rate ranges do not overlap."""
    ra, qa = _curve(anchor_rate, anchor_quality, "anchor")
    rt, qt = _curve(test_rate, test_quality, "test")
    diff = _mean_gap(ra, qa, rt, qt, method, "rate")
    return float(diff if higher_is_better else -diff)


def _mean_gap(
    xa: np.ndarray, ya: np.ndarray, xt: np.ndarray, yt: np.ndarray, method: Method, what: str
) -> float:
    """Mean of (test - anchor) y over the x interval both curves cover; NaN when they share none."""
    xa, ya = _sorted_unique(xa, ya, what)
    xt, yt = _sorted_unique(xt, yt, what)
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if hi <= lo:
        return math.nan
    return (_integral(xt, yt, lo, hi, method) - _integral(xa, ya, lo, hi, method)) / (hi - lo)
