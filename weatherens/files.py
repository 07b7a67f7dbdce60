"""Files written whole or not at all (a temporary name in the same folder, then an atomic rename),
and one writer at a time (`lock`)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import xarray as xr
import zarr

from weatherens.errors import WeatherensError


class LockedError(WeatherensError):
    """Another live process is writing the same store or folder."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a store or folder: `.NAME.lock` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the write lock of `path` (a store, a file or a workdir) for the block.

    The lock is a file created exclusively (O_EXCL) beside `path`, holding the writer's process id,
    host and start time. A second writer gets LockedError naming the holder. A lock whose holder was
    on this host and is gone (a killed job) is stale: it is taken over. Locks of other hosts are
    never taken over (their processes cannot be checked from here); the message says which file to
    remove. Released (deleted) when the block ends, normally or not.
    """
    target = lock_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(3):
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(target)
            if holder is not None and holder.get("host") == me["host"] and not _alive(holder.get("pid")):
                stale = target.with_name(f"{target.name}.stale-{os.getpid()}")
                with contextlib.suppress(FileNotFoundError):
                    os.replace(target, stale)  # one taker wins; the others retry against its new lock
                    stale.unlink()
                continue
            who = (f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}" if holder
                   else "another process")
            raise LockedError(f"{path}: being written by {who}; wait for it to finish, or remove {target} "
                              "if that process is gone") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        try:
            yield target
        finally:
            with contextlib.suppress(FileNotFoundError):
                if _holder(target) == me:
                    target.unlink()
        return
    raise LockedError(f"{path}: could not take the lock {target} (contended); try again")


def _holder(target: Path) -> dict | None:
    try:
        return json.loads(target.read_text())
    except (OSError, ValueError):
        return None  # being written this instant, or unreadable: treated as held


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_netcdf_atomic(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write `ds` to netCDF at `path` so that a reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        ds.to_netcdf(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def consolidate_zarr(path: str | os.PathLike) -> None:
    """Write the consolidated metadata of a finished zarr store, so `xr.open_zarr` reads it in one go
    and without a warning (zarr v3 warns that consolidated metadata is not part of its spec)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(path))
