"""Shared fixtures (the helpers they build on are in tests/helpers.py), and one JAX compilation cache for
the whole session, its workers and their child processes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Many tests compile the same small programs again in child processes (training resumed after a kill,
# 1 against 8 devices, two processes, the notebooks, the demo): JAX's persistent cache serves them from disk
# (docs/benchmarks.md). Set before jax is imported so that this process reads it too; cached programs are
# the same programs, so results are too.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "weatherens-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def _pin_this_worker() -> None:
    """Under pytest-xdist, give worker gwN its own share of the CPUs (gw0 the first, gw1 the second of 2),
    before JAX sizes its thread pool; child processes inherit it. Two unpinned JAX processes fight over the
    cores of a small machine (as the demo's two did: docs/benchmarks.md)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_getaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= count:
        os.sched_setaffinity(0, set(cpus[int(worker[2:]) % count::count]))


_pin_this_worker()

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


# Files in the order that pytest-xdist hands them to its workers (`--dist loadfile --no-loadscope-reorder`, as
# scripts/run.py runs it; without the second flag xdist sorts files by their number of tests): the longest
# first, so that both workers, each on its own CPU, finish about together (`scripts/run.py test --durations`).
LONGEST_FIRST = ("test_demo.py", "test_train.py", "test_infer.py", "test_notebooks.py", "test_world_ensembles.py",
                 "test_world.py", "test_types.py", "test_layout.py", "test_verify_evaluation.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the others keep their order
