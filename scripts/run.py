#!/usr/bin/env python3
"""Set up weatherens in a local virtual environment (once) and run the demo or the tests.

    python3 scripts/run.py demo [weatherens demo options]   # the main job on the embedded default
    python3 scripts/run.py test [pytest options]            # the whole test suite
    python3 scripts/run.py test --fast [pytest options]     # the tests not marked slow (the inner loop)

Needs only Python >= 3.11 with pip. The environment lives in `.venv` beside pyproject.toml
(or in $WEATHERENS_VENV) and is rebuilt when pyproject.toml changes.

On Linux the commands run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (unless GLIBC_TUNABLES is
already set): XLA on CPU takes fresh memory for its buffers at every call of a compiled step, and
with 4 KiB pages the page faults are a large part of a training step; transparent huge pages for
malloc'd memory cut their number (measured in docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("WEATHERENS_VENV", ROOT / ".venv"))
STAMP = VENV / ".weatherens-installed"


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _wanted_stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def _create_venv() -> None:
    print(f"[weatherens] creating a virtual environment in {VENV}", flush=True)
    if VENV.exists():
        shutil.rmtree(VENV)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    except subprocess.CalledProcessError:
        print("[weatherens] 'python -m venv' failed (no ensurepip?); trying virtualenv", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--user", "-q", "virtualenv"], check=True)
        subprocess.run([sys.executable, "-m", "virtualenv", str(VENV)], check=True)


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"weatherens needs Python >= 3.11 (this is {sys.version.split()[0]})")
    if STAMP.exists() and STAMP.read_text() == _wanted_stamp() and _bin("weatherens").exists():
        return
    _create_venv()
    py = str(_bin("python"))
    print("[weatherens] installing weatherens and its dependencies (under a minute)", flush=True)
    _install(py, f"{ROOT}[test]")
    STAMP.write_text(_wanted_stamp())


def _install(py: str, requirement: str) -> None:
    """Editable install of `requirement` into the environment of `py`: with uv when the package
    registry has it (it fetches and unpacks in parallel; docs/benchmarks.md compares it with pip),
    with pip otherwise. Both resolve the same versions."""
    uv = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "uv"])
    if uv.returncode == 0:
        done = subprocess.run([py, "-m", "uv", "pip", "install", "-q", "--python", py, "-e", requirement])
        if done.returncode == 0:
            return
        print("[weatherens] uv could not install; falling back to pip", flush=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "-e", requirement], check=True)


def run_environment() -> dict[str, str]:
    """The environment for the commands: this one, with malloc's huge pages on Linux (glibc >= 2.35)."""
    env = dict(os.environ)
    if sys.platform.startswith("linux") and "GLIBC_TUNABLES" not in env:
        env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"  # older glibc ignores an unknown tunable
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_environment()
    what, rest = argv[0], argv[1:]
    if what == "demo":
        cmd = [str(_bin("weatherens")), "demo", *rest]
    else:
        fast = ["-m", "not slow"] if "--fast" in rest else []
        rest = [a for a in rest if a != "--fast"]
        # files in their collected order (tests/conftest.py puts the longest first), not by test count
        cmd = [str(_bin("python")), "-m", "pytest", "-n", "2", "--dist", "loadfile", "--no-loadscope-reorder", *fast, *rest]
    return subprocess.run(cmd, cwd=ROOT, env=run_environment()).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
