"""codec.kernels: the custom ops equal cuDNN's / diffusers' computation, on the CPU (plain torch) and, where
Triton is installed, through the Triton kernels in Triton's interpreter (the CUDA run is in
test_gpu_fastpath.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from codec import kernels

REPO = Path(__file__).resolve().parents[2]


def _rms_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    from diffusers.models.normalization import RMSNorm

    norm = RMSNorm(x.shape[-1], eps=1e-5, elementwise_affine=True, bias=bias is not None)
    with torch.no_grad():
        norm.weight.copy_(weight)
        if bias is not None:
            norm.bias.copy_(bias)
        return norm(x)


def _cases(gen: torch.Generator):  # noqa: ANN202
    for k, c, bias in ((3, 40, True), (5, 24, False)):
        x = torch.randn(2, c, 9, 21, generator=gen).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, 1, k, k, generator=gen)
        yield x, w, torch.randn(c, generator=gen) if bias else None


def _check_ops() -> None:
    gen = torch.Generator().manual_seed(0)
    for x, w, b in _cases(gen):
        out = kernels.depthwise_conv(x, w, b)
        assert out.is_contiguous(memory_format=torch.channels_last)
        ref = F.conv2d(x, w, b, padding=w.shape[-1] // 2, groups=x.shape[1])
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for bias in (None, torch.randn(48, generator=gen)):
        x, weight = torch.randn(3, 5, 7, 48, generator=gen), torch.randn(48, generator=gen)
        out = kernels.rms_norm(x, weight, bias, 1e-5)
        torch.testing.assert_close(out, _rms_reference(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_ops_on_the_cpu():
    assert not kernels.triton_ok(torch.zeros(1))
    _check_ops()


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_triton_kernels_in_the_interpreter():
    """The Triton code itself, on the CPU: its interpreter must be chosen before anything imports Triton
    (torch does, at start-up), so this runs in a process of its own."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")])))  # fmt: skip
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "triton kernels ok" in done.stdout


if __name__ == "__main__":
    assert kernels.triton_ok(torch.zeros(1)), "Triton's interpreter is not on (TRITON_INTERPRET=1)"
    _check_ops()
    print("triton kernels ok")
