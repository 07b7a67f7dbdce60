"""The type checker runs clean: mypy, configured by pyproject.toml's [tool.mypy] (files = weatherens), finds no
errors in the package, whose public entry points (checkpoint.save, checkpoint.load_for_inference, the
verification functions) are fully annotated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_runs_clean_on_the_package():
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
