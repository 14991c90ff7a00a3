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
