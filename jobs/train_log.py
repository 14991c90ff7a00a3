"""Training logs: loss terms summed on the device, one all-reduce and one JSONL row per log step.

A row: ``step``, ``time_s`` (training seconds), ``stage``, ``lr``, ``steps_per_s``, the mean of each
loss term over the interval (``loss``, ``mse``, ``perceptual``, ``bpp``, ``distill``, ``aux``,
``psnr``, ``grad_norm``, ``latent_rms``, ``gan_g``/``gan_d`` in stage C), ``skipped`` (non-finite
steps) and per quality ``bpp_q<k>`` / ``psnr_q<k>`` over the samples that drew quality k.
``tools/plot_training.py`` plots them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["JsonlLog", "per_quality"]

log = logging.getLogger("ditic.train")


def per_quality(bpp: Tensor, psnr: Tensor, q: Tensor, n: int) -> dict[str, Tensor]:
    """Sums and counts of bpp and PSNR per quality, as device tensors (summed over a log interval)."""
    idx = q - 1
    ones = torch.ones_like(bpp)
    return {
        "q_count": torch.zeros(n, device=bpp.device).index_add_(0, idx, ones),
        "q_bpp": torch.zeros(n, device=bpp.device).index_add_(0, idx, bpp.float()),
        "q_psnr": torch.zeros(n, device=bpp.device).index_add_(0, idx, psnr.float()),
    }


class JsonlLog:
    """Accumulates logging tensors on the device; one host sync and one JSONL row per log interval."""

    def __init__(self, path: Path, rank: int, world: int) -> None:
        self.path, self.rank, self.world = path, rank, world
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.t0 = time.monotonic()
        if rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, parts: dict[str, Tensor]) -> None:
        for k, v in parts.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def flush(self, step: int, train_seconds: float, stage: str, lr: float) -> dict:
        if not self.count:
            return {}
        keys = sorted(self.sums)
        flat = torch.cat([self.sums[k].reshape(-1) for k in keys])
        if self.world > 1:
            dist.all_reduce(flat)
        values, offset, row = flat.tolist(), 0, {}
        for k in keys:
            n = self.sums[k].numel()
            row[k] = values[offset : offset + n] if n > 1 else values[offset]
            offset += n
        row = _finish_row(row, self.count * self.world)
        now = time.monotonic()
        row = {
            "step": step,
            "time_s": round(train_seconds, 2),
            "stage": stage,
            "lr": lr,
            "steps_per_s": round(self.count / max(1e-9, now - self.t0), 3),
            **row,
        }
        if self.rank == 0:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            log.info("step %d %s loss %.4f", step, stage, row.get("loss", float("nan")))
        self.sums, self.count, self.t0 = {}, 0, now
        return row


def _finish_row(raw: dict, samples: int) -> dict:
    """Means over the interval; per-quality sums become bpp_q<k> / psnr_q<k>."""
    counts = raw.pop("q_count", None)
    q_bpp, q_psnr = raw.pop("q_bpp", None), raw.pop("q_psnr", None)
    row = {k: round(v / samples, 6) for k, v in raw.items()}
    row["skipped"] = int(raw.get("skipped", 0))
    if counts is not None:
        for k, c in enumerate(counts, start=1):
            if c:
                row[f"bpp_q{k}"] = round(q_bpp[k - 1] / c, 5)
                row[f"psnr_q{k}"] = round(q_psnr[k - 1] / c, 3)
    return row
