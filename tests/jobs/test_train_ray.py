"""The training loop inside Ray Train (TorchTrainer on CPU workers, gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_stack import ray_cluster  # noqa: F401
from helpers import write_small_photos

from jobs.train import TrainOptions, train_ray


def _opts(tmp_path: Path, **kw) -> TrainOptions:
    photos = write_small_photos(tmp_path / "photos", count=1)
    base = dict(
        data=str(photos),
        config="ditic-test",
        out=str(tmp_path / "run"),
        steps=2,
        batch_size=1,
        crop=64,
        perceptual="none",
        log_every=1,
        loader_threads=1,
        stage_a=0.5,
    )
    return TrainOptions(**{**base, **kw})


@pytest.mark.slow
def test_ray_train_two_steps_on_two_workers(ray_cluster, tmp_path: Path):  # noqa: F811
    """2 steps (stage A then B) under DDP on two CPU workers: each draws its own crops, the averaged
    gradient keeps their weights identical; rank 0 logs and saves the state."""
    summary = train_ray(_opts(tmp_path, lr=1e-3), num_workers=2, use_gpu=False, cpus_per_worker=0.5)
    other = json.loads((tmp_path / "run" / "summary-rank1.json").read_text())
    assert summary["step"] == other["step"] == 2 and summary["stage"] == "B"
    assert summary["weights_checksum"] == other["weights_checksum"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["stage"]) for r in rows] == [(1, "A"), (2, "B")]
    assert json.loads((tmp_path / "run" / "state" / "state.json").read_text())["step"] == 2
