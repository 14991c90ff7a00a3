"""Fixtures of the reliability tests: the session's SeaweedFS and Ray (tests/fixtures_stack.py)."""

from fixtures_stack import ray_cluster, s3_store  # noqa: F401
