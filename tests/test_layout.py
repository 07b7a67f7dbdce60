"""The one-way data flow of docs/architecture.md, checked on the imports themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _probe(*packages: str) -> tuple[list[str], bool]:
    """Run tests/import_probe.py in a fresh interpreter: (the modules it imported, whether dinosaur came in)."""
    probe = Path(__file__).with_name("import_probe.py")
    out = subprocess.run([sys.executable, str(probe), *packages], check=True, capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return lines[-2].split(","), lines[-1] == "dinosaur"


@pytest.mark.slow  # a fresh interpreter imports every module
def test_only_the_world_imports_dinosaur():
    """data, model, train, infer, verify and sphere never import dinosaur; the probe does see the world's
    modules import it (so it can fail)."""
    modules, dinosaur = _probe("weatherens.data", "weatherens.model", "weatherens.train", "weatherens.infer",
                               "weatherens.verify", "weatherens.sphere")
    assert len(modules) > 30 and not any(m.startswith("weatherens.world") for m in modules)
    assert not dinosaur
    assert _probe("weatherens.world")[1]


def test_the_wheel_lists_every_package_and_ships_configs_and_checkpoints():
    """pyproject.toml names the packages one by one (configs/ and checkpoints/ are mapped into the wheel):
    a new subpackage of weatherens/ must be added there, or the wheel would lack it."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "weatherens").rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"weatherens.configs", "weatherens.checkpoints"}
    assert setuptools["package-dir"] == {"weatherens.configs": "configs", "weatherens.checkpoints": "checkpoints"}
