"""A Ray task's error reaches the user as its cause's one line, not the worker's traceback."""

import ray.exceptions

from jobs.cli import _one_line
from pipeline.storage import StorageError


def test_ray_task_error_is_reported_by_its_cause() -> None:
    cause = StorageError("s3://bucket/x.jpg: failed after 5 attempts")
    try:
        raise cause
    except StorageError as e:
        wrapped = ray.exceptions.RayTaskError("read_images", "Traceback ...\n" * 160, e).as_instanceof_cause()
    assert isinstance(wrapped, StorageError)  # so the CLI's except clause catches it
    assert str(wrapped).count("\n") > 100  # the remote traceback, as Ray prints it
    assert _one_line(wrapped) == "s3://bucket/x.jpg: failed after 5 attempts"
    assert _one_line(ValueError("plain")) == "plain"


def _allocator_setting_after_main(env: dict[str, str]) -> str:
    import subprocess
    import sys
    from pathlib import Path

    code = "import os; from jobs import cli; cli.main([]); print(os.environ.get('PYTORCH_CUDA_ALLOC_CONF'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def test_ditic_sets_the_allocator_default_but_keeps_the_users() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    assert _allocator_setting_after_main(env) == "expandable_segments:True"
    assert _allocator_setting_after_main({**env, "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}) == (
        "max_split_size_mb:64"
    )
