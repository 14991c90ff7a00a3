"""Exactly once under crashes, for real: SIGKILL the driver, or an encoder worker, mid-job.

The job runs as ``python -m jobs.cli compress-images`` in a subprocess joined to the session's
Ray, reading from and writing to SeaweedFS. After at least one shard is committed the process is
killed; the same command is run again, and every input must then be in the manifests exactly once
and ``verify`` must pass.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import committed_exactly_once, write_crops

from pipeline.manifest import ArchiveLayout
from pipeline.storage import open_location

REPO = Path(__file__).resolve().parents[2]
ITEMS = 20


@pytest.fixture(scope="module")
def source(s3_store, example_photos, shared_data, tmp_path_factory) -> tuple[str, list[str]]:
    """ITEMS crops of real photos (dev set and examples), 160–256 px, uploaded to S3."""
    local = tmp_path_factory.mktemp("kill-src")
    photos = sorted((shared_data / "dev").iterdir()) + [p for p in example_photos if p.suffix == ".jpg"]
    keys = write_crops(local, photos, ITEMS, side=(160, 16, 112), quality=92)
    bucket = s3_store.bucket()
    for key in keys:
        s3_store.upload(local / key, f"{bucket}/src/{key}")
    return f"{bucket}/src", sorted(keys)


def _command(src: str, dest: str, address: str, store) -> list[str]:
    return [
        sys.executable, "-m", "jobs.cli", "compress-images", src, dest, "--model", "ditic-test",
        "--batch-size", "1", "--shard-size", "2", "--address", address, "--no-progress",
        "--storage-options", json.dumps(store.storage_options),
    ]  # fmt: skip


def _start(command: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _committed(dest: str, store) -> int:
    return len(ArchiveLayout(open_location(dest, store.storage_options)).manifest_paths())


def _wait_for_commit(process: subprocess.Popen, dest: str, store, log: Path, timeout_s: float = 240) -> int:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert process.poll() is None, f"job ended before the kill:\n{log.read_text()[-3000:]}"
        count = _committed(dest, store)
        if count:
            return count
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"no shard committed in {timeout_s} s:\n{log.read_text()[-3000:]}")


def _check_exactly_once(dest: str, store, keys: list[str]) -> list[dict]:
    rows, report = committed_exactly_once(dest, store.storage_options, keys)
    assert not report.warnings  # the rerun cleaned the killed run's orphans
    return rows


def _raylet_children(pattern: str) -> list[int]:
    """PIDs of this session's Ray worker processes whose title contains ``pattern``."""
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid == raylet and pattern in cmdline:
            found.append(int(entry.name))
    return found


def test_sigkill_of_the_driver_then_rerun_commits_every_input_once(
    source, s3_store, ray_cluster, tmp_path
) -> None:
    src, keys = source
    dest = f"{src.rsplit('/', 1)[0]}/archive-driver-kill"
    command = _command(src, dest, ray_cluster, s3_store)
    first = _start(command, tmp_path / "first.log")
    committed = _wait_for_commit(first, dest, s3_store, tmp_path / "first.log")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert committed < ITEMS // 2, "the job finished before it could be killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    rows = _check_exactly_once(dest, s3_store, keys)
    assert {r["attempt"] for r in rows} == {1, 2}  # the first run's shards were kept, not redone
    assert "already committed" in second.stdout


def test_sigkill_of_an_encoder_worker_mid_job_loses_nothing(source, s3_store, ray_cluster, tmp_path) -> None:
    src, keys = source
    dest = f"{src.rsplit('/', 1)[0]}/archive-worker-kill"
    log = tmp_path / "job.log"
    job = _start(_command(src, dest, ray_cluster, s3_store), log)
    _wait_for_commit(job, dest, s3_store, log)
    victims = _raylet_children("Encoder")
    assert victims, "no encoder worker found"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert job.wait(timeout=400) == 0, log.read_text()[-3000:]
    _check_exactly_once(dest, s3_store, keys)
