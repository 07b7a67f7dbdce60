"""scripts/run.py's environment: malloc's huge pages cut the page faults of a compiled XLA step on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import run  # noqa: E402

# a gradient whose temporaries (~100 MB) XLA allocates afresh at every call; prints the minor page
# faults of 5 calls after the first
_FAULTS = """
import resource, jax, jax.numpy as jnp
x = jnp.ones((16, 32, 64, 48)); w = jnp.ones((48, 48)) / 48
def f(w, x):
    for _ in range(8):
        x = jnp.tanh(x @ w)
    return jnp.sum(x)
g = jax.jit(jax.grad(f))
jax.block_until_ready(g(w, x))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    jax.block_until_ready(g(w, x))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_run_environment_keeps_a_users_tunables(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert run.run_environment()["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"


def _transparent_huge_pages_allowed() -> bool:
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return mode.exists() and "[never]" not in mode.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _transparent_huge_pages_allowed(),
                    reason="needs Linux with transparent huge pages in 'madvise' or 'always' mode")
def test_huge_pages_cut_the_page_faults_of_a_compiled_gradient(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    env = run.run_environment()
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    with_pages, without = _faults(env), _faults(plain)
    assert without > 5_000  # 4 KiB pages: each call faults its temporaries in again
    assert with_pages * 5 < without, (with_pages, without)
