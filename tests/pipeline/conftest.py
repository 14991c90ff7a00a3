"""Fixtures of the pipeline tests: the shared SeaweedFS and Ray of the session (tests/fixtures_stack.py)."""

from fixtures_stack import ray_cluster, s3_store  # noqa: F401
