"""Helpers of the reliability tests, reusing the pipeline tests' own (loaded by path, not copied).

``kill`` is ``tests/pipeline/test_kill_resume.py`` (``_command``, ``_start``, ``_wait_for_commit``,
``_check_exactly_once``, ``_raylet_children``); ``corpus`` is ``tests/pipeline/corpus.py``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


def _load(alias: str, path: Path) -> ModuleType:
    if alias in sys.modules:
        return sys.modules[alias]
    spec = importlib.util.spec_from_file_location(alias, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


kill = _load("_reliability_kill_resume", TESTS / "pipeline" / "test_kill_resume.py")
corpus = _load("_reliability_corpus", TESTS / "pipeline" / "corpus.py")


def endpoint(url: str) -> SimpleNamespace:
    """A store-like object for the kill/resume helpers: only ``storage_options`` is read."""
    return SimpleNamespace(storage_options={"endpoint_url": url})


def run_job(command: list[str], log: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run a ``ditic`` command to completion with its output in ``log`` (and returned)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    log.write_text(result.stdout + result.stderr)
    return result


def wait_until(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.1) -> Any:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
