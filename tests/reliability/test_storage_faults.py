"""Storage faults on the real stack: injected errors, resets and slow responses; SeaweedFS stopped
and restarted mid-job; a read task killed mid-job. After each, every input is in the archive
exactly once, ``ditic verify`` passes and no orphan or staging object is left.

The jobs run as ``python -m jobs.cli compress-images`` subprocesses joined to the session's Ray
(the kill/resume tests' helpers), with s3fs pointed at a :class:`FaultProxy` in front of SeaweedFS
or at a SeaweedFS of their own that is stopped and started again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from faultproxy import Fault, FaultProxy
from fixtures_stack import WEED_PORTS, ObjectStore, _start_weed, _wait_ready, free_ports, set_test_credentials
from helpers import write_crops
from reliability_helpers import endpoint, kill, run_job, wait_until

from jobs.cli import main
from pipeline.job import CompressOptions, compress_images
from pipeline.manifest import RETRYABLE_ERROR_PREFIX, ArchiveLayout, committed_keys
from pipeline.storage import list_files, open_location

pytestmark = pytest.mark.slow
ITEMS = 8
OUTAGE_S = float(os.environ.get("DITIC_TEST_OUTAGE_S", "3"))  # longer: see docs/RELIABILITY.md


def _upload(store: ObjectStore, local: Path, keys: list[str]) -> str:
    bucket = store.bucket("rel")
    for key in keys:
        store.upload(local / key, f"{bucket}/src/{key}")
    return bucket


@pytest.fixture(scope="module")
def crops(example_photos, tmp_path_factory) -> tuple[Path, list[str]]:
    local = tmp_path_factory.mktemp("fault-src")
    return local, write_crops(local, [p for p in example_photos if p.suffix == ".jpg"], ITEMS)


@pytest.fixture(scope="module")
def source(s3_store, crops) -> tuple[str, list[str]]:
    local, keys = crops
    return _upload(s3_store, local, keys), keys


def _verify_cli(dest: str, store: ObjectStore) -> int:
    return main(["verify", dest, "--storage-options", json.dumps(store.storage_options)])


def _assert_complete(dest: str, store: ObjectStore, keys: list[str]) -> list[dict]:
    rows = kill._check_exactly_once(dest, store, keys)  # also: verify passes, no orphan shard
    location = open_location(dest, store.storage_options)
    assert not list_files(location.fs, ArchiveLayout(location).staging), "staging leftovers"
    assert _verify_cli(dest, store) == 0
    return rows


def test_injected_errors_resets_and_slow_responses_lose_nothing(
    source, s3_store, ray_cluster, tmp_path
) -> None:
    bucket, keys = source
    dest = f"{bucket}/archive-faults"
    with FaultProxy(s3_store.endpoint_url, seed=7) as proxy:
        proxy.add(Fault("status", method="GET", probability=0.1, status=503))
        proxy.add(Fault("status", method="PUT|POST|DELETE", probability=0.08, status=500))
        # the store did the write, the client cannot know: retried moves and commits must be idempotent
        proxy.add(Fault("reset", method="PUT", path=r"/manifests/", times=2, after_forward=True))
        proxy.add(Fault("reset", method="PUT", probability=0.08, after_forward=True))
        proxy.add(Fault("reset", method="GET|HEAD", probability=0.08))
        proxy.add(Fault("delay", probability=0.05, delay_s=0.5))
        proxy.add(Fault("delay", method="GET", probability=0.02, delay_s=1.5, after_forward=True))
        started = time.time()
        result = run_job(kill._command(f"{bucket}/src", dest, ray_cluster, endpoint(proxy.url)),
                         tmp_path / "job.log")  # fmt: skip
        print(f"job {time.time() - started:.1f} s, requests {dict(proxy.requests)}")
        fired = {kind: proxy.injected(kind) for kind in ("status", "reset", "delay")}
    assert result.returncode == 0, (tmp_path / "job.log").read_text()[-3000:]
    assert min(fired.values()) >= 2, fired
    _assert_complete(dest, s3_store, keys)


class RestartableStore(ObjectStore):
    """A SeaweedFS of its own (the session's store is shared), stopped and started on the same ports."""

    def __init__(self, root: Path) -> None:
        set_test_credentials()
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True)
        self.ports = dict(zip(WEED_PORTS, free_ports(len(WEED_PORTS)), strict=True))
        super().__init__(f"http://127.0.0.1:{self.ports['s3']}", _start_weed(self.data_dir, self.ports),
                         root / "weed.log")  # fmt: skip
        _wait_ready(self)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def start(self) -> None:
        self.process = _start_weed(self.data_dir, self.ports)
        _wait_ready(self)


@pytest.fixture
def own_store(tmp_path) -> RestartableStore:
    store = RestartableStore(tmp_path / "weed")
    yield store
    if store.process.poll() is None:
        store.process.terminate()
        store.process.wait(timeout=30)


def test_object_store_killed_and_restarted_mid_job(crops, own_store, ray_cluster, tmp_path) -> None:
    local, keys = crops
    bucket = _upload(own_store, local, keys)
    dest = f"{bucket}/archive-restart"
    with FaultProxy(own_store.endpoint_url) as proxy:
        # slow source reads: the outage hits reads as well as writes
        proxy.add(Fault("delay", method="GET", path=r"/src/", delay_s=0.4))
        command = kill._command(f"{bucket}/src", dest, ray_cluster, endpoint(proxy.url))
        job = kill._start(command, tmp_path / "first.log")
        kill._wait_for_commit(job, dest, own_store, tmp_path / "first.log")
        own_store.stop()
        time.sleep(OUTAGE_S)  # requests in flight fail, new ones are refused
        own_store.start()
        code = job.wait(timeout=300)
    output = (tmp_path / "first.log").read_text()
    if code != 0:  # allowed (a long outage outlasts the retries), if it says why and can be resumed
        assert "ditic compress-images: error:" in output and "StorageError" in output, output[-3000:]
        direct = kill._command(f"{bucket}/src", dest, ray_cluster, own_store)  # the proxy is gone
        second = run_job(direct, tmp_path / "second.log")
        assert second.returncode == 0, (tmp_path / "second.log").read_text()[-3000:]
    rows = _assert_complete(dest, own_store, keys)
    print(f"first run exit {code}; attempts {sorted({r['attempt'] for r in rows})}")


def test_sigkill_of_a_read_task_mid_job_loses_nothing(source, s3_store, ray_cluster, tmp_path) -> None:
    bucket, keys = source
    dest = f"{bucket}/archive-read-kill"
    with FaultProxy(s3_store.endpoint_url, seed=3) as proxy:
        # slow source reads: each read task lives long enough to be found and killed
        proxy.add(Fault("delay", method="GET", path=r"/src/", delay_s=0.5))
        log = tmp_path / "job.log"
        job = kill._start(kill._command(f"{bucket}/src", dest, ray_cluster, endpoint(proxy.url)), log)
        try:
            victims = wait_until(lambda: kill._raylet_children("read_images"), 120, "a read task")
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            code = job.wait(timeout=300)
        finally:
            if job.poll() is None:
                job.kill()
    output = log.read_text()
    if code != 0:
        assert "ditic compress-images: error:" in output, output[-3000:]
        rerun = run_job(kill._command(f"{bucket}/src", dest, ray_cluster, s3_store), tmp_path / "rerun.log")
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    _assert_complete(dest, s3_store, keys)


def test_a_read_failing_past_its_retries_is_retried_by_the_rerun(source, s3_store, ray_cluster) -> None:
    """The job completes with the unreadable object as an error row (a NaN in the sink once failed
    the whole job); that row is retryable, so the clean rerun reads that object alone and its ok row
    replaces the error row."""
    bucket, keys = source
    dest, victim = f"{bucket}/archive-read-outage", keys[0]
    fast = {"config_kwargs": {"retries": {"max_attempts": 1}}}  # botocore gives up at once: seconds
    with FaultProxy(s3_store.endpoint_url) as proxy:
        proxy.add(Fault("status", method="GET", path=re.escape(f"/src/{victim}"), status=503))
        options = CompressOptions(
            source=f"{bucket}/src", dest=dest, model="ditic-test", batch_size=2, shard_size=4,
            progress=False, storage_options={"endpoint_url": proxy.url, **fast},
        )  # fmt: skip
        first = compress_images(options)
        assert proxy.injected("status") >= 5 and first["error"] == 1  # the object stayed unreadable
    assert [e["key"] for e in first["errors"]] == [victim]
    assert first["errors"][0]["error"].startswith(RETRYABLE_ERROR_PREFIX)
    location = open_location(dest, s3_store.storage_options)
    assert committed_keys(location) == set(keys) - {victim}
    options.storage_options = s3_store.storage_options
    second = compress_images(options)
    assert (second["run"]["submitted"], second["run"]["skipped"]) == (1, ITEMS - 1)
    assert second["run"]["duplicates_dropped"] == 1 and (second["ok"], second["error"]) == (ITEMS, 0)
    _assert_complete(dest, s3_store, keys)
