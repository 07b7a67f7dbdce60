"""The one-way data flow of docs/architecture.md, checked on the imports themselves."""

from __future__ import annotations

import subprocess
import sys

# Each module of these packages is imported alone in a fresh interpreter state (weatherens and
# dinosaur dropped from sys.modules before each) and must not have pulled dinosaur in.
_PROBE = r"""
import importlib, pkgutil, sys
import weatherens
packages = sys.argv[1:]
modules = []
for p in packages:
    pkg = importlib.import_module(p)
    modules.append(p)
    modules += [f"{p}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
bad = []
for m in modules:
    for name in [n for n in sys.modules if n.startswith(("weatherens", "dinosaur"))]:
        del sys.modules[name]
    importlib.import_module(m)
    if "dinosaur" in sys.modules:
        bad.append(m)
print(",".join(modules))
print(",".join(bad))
"""


def _dinosaur_importers(*packages: str) -> tuple[list[str], list[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *packages], check=True, capture_output=True, text=True)
    modules, bad = out.stdout.strip().splitlines()[-2:]
    return modules.split(","), [b for b in bad.split(",") if b]


def test_only_the_world_imports_dinosaur():
    """data, model, train, infer, verify and sphere never import dinosaur; the probe does see the
    world's modules import it (so it can fail)."""
    modules, bad = _dinosaur_importers("weatherens.data", "weatherens.model", "weatherens.train", "weatherens.infer",
                                       "weatherens.verify", "weatherens.sphere", "weatherens.world")
    outside = [m for m in modules if not m.startswith("weatherens.world")]
    assert len(outside) > 30 and not [m for m in bad if m in outside], bad
    assert {"weatherens.world.model", "weatherens.world.ensembles"} <= set(bad)
