"""tools/gpu_train.sh on CPU with ditic-test: the GPU run's exact path, in two calls (resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import write_small_photos

REPO = Path(__file__).resolve().parents[2]


def _call(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {
        "PYTHON": sys.executable,
        "BUNDLE": str(tmp_path / "no-bundle"),
        "CONFIG": "ditic-test",
        "DATA": str(tmp_path / "photos"),
        "RUN": str(tmp_path / "run"),
        "OUT": str(tmp_path / "out"),
        "HOLDOUT": "1",
        "EVAL_CROP": "64",
        "EVAL_QUALITIES": "4",  # real entropy coding is slow on CPU: one quality proves the path
        "STEPS": "3",
        "EXTRA": "--batch-size 1 --crop 64 --perceptual none --log-every 1 --stage-a 0.34",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_train.sh"), "3"],
        env={**os.environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_gpu_script_trains_resumes_exports_and_evaluates(tmp_path: Path):
    write_small_photos(tmp_path / "photos")
    _call(tmp_path, STOP_AT="2")
    first = json.loads((tmp_path / "out" / "report.json").read_text())
    assert first["summary"]["step"] == 2 and first["summary"]["stop"] == "until_step"

    _call(tmp_path, RESUME="1")
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["step"] == 3 and report["summary"]["stop"] == "schedule done"
    assert report["state_precision"] == "full"  # ditic-test is small enough to come back whole
    evaluated = report["quick_eval"]["qualities"]
    assert set(evaluated) == {"q4"}
    assert set(report["summary"]["held_out"]) == {"q1", "q2", "q3", "q4"}
    assert all(r["bpp"] > 0 and r["psnr"] > 0 for r in evaluated.values())
    assert report["quick_eval"]["model_id"] == report["summary"]["model_id"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
    state = json.loads((out / "state" / "state.json").read_text())
    assert state["step"] == 3


def test_gpu_script_with_nproc_trains_one_model_over_two_processes(tmp_path: Path):
    """NPROC=2: the script starts `ditic train` under torchrun (two CPU ranks, gloo) and brings back
    rank 0's export, checked with real payloads, as in a one-process call."""
    write_small_photos(tmp_path / "photos")
    _call(tmp_path, NPROC="2", STEPS="2", OMP_NUM_THREADS="1")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["step"] == 2 and report["summary"]["stop"] == "schedule done"
    assert report["quick_eval"]["model_id"] == report["summary"]["model_id"]
    other = json.loads((tmp_path / "run" / "summary-rank1.json").read_text())
    assert other["weights_checksum"] == report["summary"]["weights_checksum"]
