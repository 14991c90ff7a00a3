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


@pytest.mark.slow
def test_torchrun_two_processes_train_in_step_and_rank0_exports(tmp_path: Path):
    """The same DDP loop without Ray: `torchrun` starts two CPU processes (gloo) of `ditic train`; their
    weights stay identical, rank 0 alone logs, saves, evaluates and exports a loadable checkpoint."""
    import os
    import subprocess
    import sys

    from codec.weights import read_checkpoint_info

    opts = _opts(tmp_path)
    export = tmp_path / "run" / "ditic-test.safetensors"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "jobs.cli", "train", "--config", "ditic-test", "--data", opts.data, "--out", opts.out,
        "--steps", "2", "--batch-size", "1", "--crop", "64", "--perceptual", "none", "--log-every", "1",
        "--stage-a", "0.5", "--lr", "1e-3", "--holdout", "0", "--device", "cpu",
        "--export", str(export),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).parents[2]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=repo)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # rank 0 prints; rank 1 only writes its file
    other = json.loads((tmp_path / "run" / "summary-rank1.json").read_text())
    assert summaries[0]["step"] == other["step"] == 2 and summaries[0]["stage"] == "B"
    assert summaries[0]["weights_checksum"] == other["weights_checksum"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["stage"]) for r in rows] == [(1, "A"), (2, "B")]
    info = read_checkpoint_info(export)
    assert info.model_id == summaries[0]["model_id"] and info.trained
