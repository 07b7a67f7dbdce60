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
print(len(modules), ",".join(bad))
"""


def _dinosaur_importers(*packages: str) -> tuple[int, list[str]]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *packages], check=True, capture_output=True, text=True)
    count, bad = out.stdout.strip().splitlines()[-1].partition(" ")[::2]
    return int(count), [b for b in bad.split(",") if b]


def test_data_model_train_infer_and_verify_never_import_dinosaur():
    count, bad = _dinosaur_importers("weatherens.data", "weatherens.model", "weatherens.train", "weatherens.infer",
                                     "weatherens.verify", "weatherens.sphere")
    assert count > 30 and bad == []


def test_the_probe_sees_the_world_import_dinosaur():
    count, bad = _dinosaur_importers("weatherens.world")
    assert "weatherens.world.model" in bad and "weatherens.world.ensembles" in bad
