"""Golden payloads encoded on a GPU decode to the same latents on this CPU, at any thread count.

``tests/codec/data/golden_gpu`` holds 16 payloads (4 photos x 4 qualities) that ``tools/gpu_bench.sh``
encoded with the seeded ``ditic-test`` checkpoint on an NVIDIA H200 (torch 2.11 + CUDA), together with
the latents ``y_hat`` and pixels the GPU decoded from them. Regenerate only on purpose: a change here means
old archives stop decoding.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "data" / "golden_gpu"
TOOL = Path(__file__).resolve().parents[2] / "tools" / "check_decode.py"


def _check_decode():
    spec = importlib.util.spec_from_file_location("check_decode", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("threads", [1, 2])
def test_gpu_payloads_decode_identically_on_cpu(threads: int) -> None:
    tool = _check_decode()
    rows = tool.check(GOLDEN, str(GOLDEN / "ditic-test-seeded.safetensors"), threads)
    assert len(rows) == 16
    for row in rows:
        # one wrong symbol moves y_hat by ~1; float64 noise stays ~1e-16
        assert row["latent_max_diff"] < 1e-9, row
        # the pixel path runs in float32 on another device: a level of rounding at most
        assert row["pixel_max_diff"] <= 2, row
        assert row["pixel_psnr"] > 55, row
