"""Test helpers, imported by the test modules and conftest.py: tiny ERA5-schema datasets and stores,
random band-limited spherical-harmonic coefficients, a local HTTP server, and where the real ERA5 samples are."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr

from weatherens import grid

ERA5_SAMPLES = Path(__file__).resolve().parent / "data" / "era5"  # trimmed real ERA5, see its README.md


def canonical_dataset(
    ntime: int = 12,
    nlat: int = 32,
    nlon: int = 64,
    levels: tuple[int, ...] = (500, 850),
    step_hours: int = 6,
    start: str = "2000-01-01",
    seed: int = 0,
) -> xr.Dataset:
    """A small dataset already in canonical form, with values that encode their coordinates.

    temperature[t, l, i, j] = 200 + t + l/10 + i/100 + j/10000 (so any misplaced axis shows),
    geopotential and 2m_temperature random but reproducible.
    """
    rng = np.random.default_rng(seed)
    time = np.datetime64(start, "ns") + np.arange(ntime) * np.timedelta64(step_hours, "h")
    lat = grid.equiangular_latitudes(nlat)
    lon = grid.longitudes(nlon)
    t, l, i, j = np.meshgrid(np.arange(ntime), np.arange(len(levels)), np.arange(nlat), np.arange(nlon), indexing="ij")
    temperature = (200 + t + l / 10 + i / 100 + j / 10000).astype(np.float32)
    geopotential = (5e4 + 1e3 * rng.standard_normal((ntime, len(levels), nlat, nlon))).astype(np.float32)
    t2m = (280 + 10 * rng.standard_normal((ntime, nlat, nlon))).astype(np.float32)
    dims3, dims2 = ("time", "level", "latitude", "longitude"), ("time", "latitude", "longitude")
    return xr.Dataset(
        {
            "temperature": (dims3, temperature, {"units": "K"}),
            "geopotential": (dims3, geopotential, {"units": "m**2 s**-2"}),
            "2m_temperature": (dims2, t2m, {"units": "K"}),
        },
        coords={"time": time, "level": np.array(levels, np.int64), "latitude": lat, "longitude": lon},
    )


@contextlib.contextmanager
def serve_directory(directory: Path, requests: list[str] | None = None) -> Iterator[str]:
    """A static HTTP server of `directory` on 127.0.0.1 (a free port) for the block; yields its base URL.
    With `requests`, the path of every GET request is appended to it."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as cloud stores serve: no reconnects and retried requests

        def log_message(self, *args):
            pass

        def do_GET(self):
            if requests is not None:
                requests.append(self.path)
            super().do_GET()

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_zarr(ds: xr.Dataset, path: Path) -> Path:
    ds.to_zarr(path, mode="w", consolidated=False, zarr_format=3)
    return path


def wave_dataset(ntime: int = 60, nlat: int = 32, nlon: int = 64, levels: tuple[int, ...] = (500, 850),
                 start: str = "2000-01-01", seed: int = 0) -> xr.Dataset:
    """A learnable toy atmosphere in canonical form, 6-hourly: smooth waves travelling east at a
    level-dependent speed, plus a little noise. Variables as configs/tiny.yaml (geopotential and
    temperature on `levels`, 2m_temperature)."""
    rng = np.random.default_rng(seed)
    time = np.datetime64(start, "ns") + np.arange(ntime) * np.timedelta64(6, "h")
    lat, lon = grid.equiangular_latitudes(nlat), grid.longitudes(nlon)
    t = np.arange(ntime)[:, None, None, None]
    lev = np.arange(len(levels))[None, :, None, None]
    phi, lam = np.deg2rad(lat)[None, None, :, None], np.deg2rad(lon)[None, None, None, :]
    wave = np.cos(phi) ** 2 * np.cos(3 * lam - (0.2 + 0.1 * lev) * t) + 0.5 * np.cos(phi) * np.sin(2 * lam - 0.15 * t)
    shape = (ntime, len(levels), nlat, nlon)
    z = 5e4 + 1e4 * lev + 800 * wave + 20 * rng.standard_normal(shape)
    temp = 250 + 10 * lev + 30 * np.cos(phi) + 5 * wave + 0.3 * rng.standard_normal(shape)
    t2m = 280 + 25 * np.cos(phi[0]) + 4 * wave[:, 0] + 0.3 * rng.standard_normal((ntime, nlat, nlon))
    dims3, dims2 = ("time", "level", "latitude", "longitude"), ("time", "latitude", "longitude")
    return xr.Dataset(
        {
            "geopotential": (dims3, z.astype(np.float32), {"units": "m**2 s**-2"}),
            "temperature": (dims3, temp.astype(np.float32), {"units": "K"}),
            "2m_temperature": (dims2, t2m.astype(np.float32), {"units": "K"}),
        },
        coords={"time": time, "level": np.array(levels, np.int64), "latitude": lat, "longitude": lon},
    )


def random_coefficients(lmax: int, seed: int = 0, leading: tuple[int, ...] = ()) -> np.ndarray:
    """a_lm (..., lmax + 1, lmax + 1) of a real field band-limited to lmax: zero for m > l, a_l0 real."""
    rng = np.random.default_rng(seed)
    shape = (*leading, lmax + 1, lmax + 1)
    a = np.tril(rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    a[..., 0] = a[..., 0].real
    return a


def run_on_devices(devices: int, *args) -> dict:
    """Run `tests/on_devices.py *args` in a child process with `devices` forced host devices; its JSON result."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    res = subprocess.run([sys.executable, str(Path(__file__).with_name("on_devices.py")), *map(str, args)],
                         cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])
