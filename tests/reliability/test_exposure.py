"""Ray and storage exposure: what listens where, and where the S3 secret shows up.

* ``infra/local-stack up``: every listening socket of its SeaweedFS and Ray is on loopback; the
  generated secret is in ``env.sh`` (mode 600) only, never on a command line or in a log.
* a ``ditic compress-images`` job that starts its own local Ray: the secret is in no process's
  argv (the job's, Ray's, any worker's) and in none of the job's output or Ray's log files; and
  that Ray listens on loopback only (Ray's local-only mode, set by pipeline.job.connect_ray).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_stack import TEST_CREDENTIALS
from helpers import write_crops
from reliability_helpers import REPO

pytestmark = pytest.mark.slow
SECRET = TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def descendants(roots: list[int]) -> set[int]:
    """``roots`` and every process below them."""
    tree, found, todo = _children(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(tree.get(pid, []))
    return found


def cmdline(pid: int) -> str:
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _address(hex_address: str) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian 32-bit words
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return f"{address}:{int(port, 16)}"


def listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket the processes ``pids`` hold."""
    inodes: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes[fields[9]] = _address(fields[1])
    found = []
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in (Path("/proc") / str(pid) / "fd").iterdir()]
        except OSError:
            continue
        found += [(pid, inodes[m[1]]) for m in map(re.compile(r"socket:\[(\d+)\]").fullmatch, links)
                  if m and m[1] in inodes]  # fmt: skip
    return found


def _not_loopback(sockets: list[tuple[int, str]]) -> list[str]:
    return [f"{cmdline(pid)[:60]} on {addr}" for pid, addr in sockets
            if not ipaddress.ip_address(addr.rsplit(":", 1)[0]).is_loopback]  # fmt: skip


def _files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink()
            and secret.encode() in p.read_bytes()]  # fmt: skip


def _running(pid: int) -> bool:
    """Alive and not a zombie (a reparented child that init has not reaped yet counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not re.search(r"^State:\s*Z", status, re.M)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temporary folder with a short path: Ray's AF_UNIX socket paths must fit 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="ditic-rel-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_local_stack_listens_on_loopback_only_and_keeps_its_secret_private(short_dir) -> None:
    state = short_dir / "stack"
    env = dict(os.environ, DITIC_STACK_DIR=str(state), VENV_BIN=str(Path(sys.executable).parent))
    for name in TEST_CREDENTIALS:
        env.pop(name, None)
    script = str(REPO / "infra" / "local-stack")
    try:
        up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr + (state / "ray.log").read_text()[-3000:]
        secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", (state / "env.sh").read_text())[1]
        assert stat.S_IMODE((state / "env.sh").stat().st_mode) == 0o600
        # `up` returns once the services answer; a few of their servers open their ports a moment
        # later (a CI run once saw 4 of the 5+), so look again for up to 30 s before judging
        deadline = time.monotonic() + 30
        while True:
            roots = [int((state / "weed.pid").read_text())]
            roots += [pid for pid in descendants([1]) if str(state / "ray") in cmdline(pid)]
            processes = descendants(roots)
            sockets = listening(processes)
            if (len(roots) >= 3 and len(sockets) >= 5) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(roots) >= 3 and len(sockets) >= 5, (roots, sockets)  # weed, GCS, raylet at least
        assert not _not_loopback(sockets)
        assert not [cmdline(pid) for pid in processes if secret in cmdline(pid)]
        assert secret not in up.stdout + up.stderr
    finally:
        weed = int((state / "weed.pid").read_text()) if (state / "weed.pid").is_file() else None
        subprocess.run([script, "down"], env=env, capture_output=True, timeout=120)
    assert weed is None or not _running(weed), "local-stack down left SeaweedFS running"
    for logs in (state / "weed.log", state / "ray.log", state / "ray"):
        assert not _files_holding(logs, secret) if logs.is_dir() else secret not in logs.read_text(), logs


@pytest.fixture(scope="module")
def local_job(s3_store, example_photos, tmp_path_factory) -> dict:
    """A small compress-images job that starts its own Ray (no --address), watched while it runs."""
    root = tmp_path_factory.mktemp("exposure")
    keys = write_crops(root / "src", [p for p in example_photos if p.suffix == ".jpg"], 3)
    bucket = s3_store.bucket("exp")
    for key in keys:
        s3_store.upload(root / "src" / key, f"{bucket}/src/{key}")
    command = [sys.executable, "-m", "jobs.cli", "compress-images", f"{bucket}/src", f"{bucket}/archive",
               "--model", "ditic-test", "--batch-size", "1", "--no-progress",
               "--storage-options", f'{{"endpoint_url": "{s3_store.endpoint_url}"}}']  # fmt: skip
    ray_dir = Path(tempfile.mkdtemp(prefix="ditic-rel-", dir="/tmp"))
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_TMPDIR=str(ray_dir))
    env.pop("RAY_ADDRESS", None)
    log = root / "job.log"
    job = subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    argv, sockets = {}, {}
    while job.poll() is None:
        for pid in descendants([job.pid]):
            argv.setdefault(pid, cmdline(pid))
        sockets.update({(pid, addr): None for pid, addr in listening(descendants([job.pid]))})
        time.sleep(0.2)
    yield {"code": job.returncode, "log": log.read_text(), "argv": argv, "sockets": list(sockets),
           "ray_dir": ray_dir}  # fmt: skip
    shutil.rmtree(ray_dir, ignore_errors=True)


def test_a_job_keeps_the_secret_out_of_argv_and_logs(local_job) -> None:
    assert local_job["code"] == 0, local_job["log"][-3000:]
    assert len(local_job["argv"]) >= 4  # the job, GCS, raylet, workers were seen
    assert any("raylet" in a for a in local_job["argv"].values())
    assert not [a for a in local_job["argv"].values() if SECRET in a]
    assert SECRET not in local_job["log"]
    assert not _files_holding(local_job["ray_dir"], SECRET)


def test_a_jobs_own_ray_listens_on_loopback_only(local_job) -> None:
    assert len(local_job["sockets"]) >= 3
    assert not _not_loopback(local_job["sockets"])
