"""evaluate-video: the metrics and one classical sweep point on a generated clip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.evaluate_video import evaluate_clip, markdown_table, plot, psnr, psnr_y


def test_psnr_and_bt601_luma():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[..., 0] = 10  # red only: RGB MSE 100/3, luma MSE (0.299*10)^2
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / (100 / 3)))
    assert psnr_y(a, b) == pytest.approx(10 * np.log10(255**2 / (2.99**2)))
    assert psnr(a, a) == 100.0


def test_classical_sweep_on_a_clip(clips, tmp_path):
    rows = evaluate_clip(clips["plain"], None, {"libx264": [20, 40], "libsvtav1": [50]}, max_frames=12)
    assert [(r["codec"], r["setting"]) for r in rows] == [("libx264", "crf 20"), ("libx264", "crf 40"),
                                                         ("libsvtav1", "crf 50")]  # fmt: skip
    high, low = rows[0], rows[1]
    assert high["kbps"] > low["kbps"] > 0 and high["psnr_rgb"] > low["psnr_rgb"] > 15
    assert all(r["frames"] == 12 and r["size"] == "64x48" for r in rows)
    assert "| plain.mp4 | 64x48 | 12 | libx264 | crf 20 |" in markdown_table(rows)
    png = tmp_path / "rd.png"
    plot(rows, png)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 200_000
    json.dumps(rows)
