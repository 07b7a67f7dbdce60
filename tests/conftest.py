"""Shared fixtures (the helpers they build on are in tests/helpers.py), and one JAX compilation cache for
the whole session, its workers and their child processes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Many tests compile the same small programs again in child processes (training resumed after a kill,
# 1 against 8 devices, two processes, the notebooks, the demo): JAX's persistent cache serves them from disk
# (a killed-and-resumed training test took 72 s without it, 55 s with it cold, 41 s warm). Set before jax is
# imported so that this process reads it too; cached programs are the same programs, so results are too.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "weatherens-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest
import xarray as xr

from helpers import ERA5_SAMPLES, canonical_dataset


@pytest.fixture
def canonical() -> xr.Dataset:
    return canonical_dataset()


@pytest.fixture
def era5_samples() -> Path:
    """tests/data/era5: trimmed real ERA5 (attribution in its README.md)."""
    return ERA5_SAMPLES
