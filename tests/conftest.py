"""Session-wide test helpers shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import example_photo_paths

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DITIC_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (train/dev/video); tests that need it skip when it is absent."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data}")
    return data


@pytest.fixture(scope="session")
def example_photos() -> list[Path]:
    """The small, freely licensed photos shipped in the repo (examples/photos)."""
    return example_photo_paths()
