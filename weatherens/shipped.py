"""Where the configs and checkpoints that weatherens ships live, in a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path


def shipped_folder(name: str) -> Path:
    """The folder `name` ('configs' or 'checkpoints') that weatherens ships: the checkout's, beside
    pyproject.toml (a source tree or an editable install), else the copy inside the installed package
    (a wheel holds them as weatherens/configs and weatherens/checkpoints; see pyproject.toml)."""
    package = Path(__file__).resolve().parent
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    return package / name


CONFIGS = shipped_folder("configs")
CHECKPOINTS = shipped_folder("checkpoints")
