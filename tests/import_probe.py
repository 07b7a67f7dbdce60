"""Imports every module of the packages given on the command line, in this one fresh interpreter, and
prints two lines: the modules imported, and 'dinosaur' if any of them pulled dinosaur in (else nothing).

    python tests/import_probe.py weatherens.data weatherens.model ...

What importing a module alone loads is a subset of what importing it among others loads, so no
dinosaur after importing all of them means none of them imports dinosaur alone.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys


def modules_of(packages: list[str]) -> list[str]:
    """The packages and their direct submodules, each imported."""
    modules = []
    for name in packages:
        modules += [name, *(f"{name}.{m.name}" for m in pkgutil.iter_modules(importlib.import_module(name).__path__))]
    for module in modules:
        importlib.import_module(module)
    return modules


if __name__ == "__main__":
    probed = modules_of(sys.argv[1:])
    print(",".join(probed))
    print("dinosaur" if "dinosaur" in sys.modules else "")
