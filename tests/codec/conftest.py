"""Fixtures of the model tests: the tiny seeded ``ditic-test`` model and codec, one CPU thread.

One thread by default: these tests are small, and on a shared 2-core machine a second OpenMP thread
only waits for the scheduler. The cross-thread test sets its own thread counts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_codec():
    """``load_codec("ditic-test")``: seeded, untrained, deterministic."""
    from codec.api import load_codec

    return load_codec("ditic-test")


@pytest.fixture(scope="session")
def tiny_model(tiny_codec):
    return tiny_codec.model


@pytest.fixture
def photo() -> np.ndarray:
    """A smooth 96x160 RGB test picture with some texture (deterministic)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:96, 0:160]
    base = np.stack([xx * 1.5, yy * 2.5, (xx + yy)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
