#!/usr/bin/env python3
"""Training-sampler throughput against a raw zarr read of the same samples, in one run.

    python scripts/bench_loader.py [--years 2] [--batch-size 16] [--batches 60]

Builds (once, in --workdir) a 64 x 32 six-hourly store in the physics world's layout
(4 pressure-level variables x 4 levels + 2 surface variables = 18 channels, time chunk 1),
then measures, on the same sample windows (inputs t-dt, t and one target t+dt):
  raw zarr   zarr-python reads of each window, variable by variable, one thread (the reference)
  sampler    weatherens Sampler streaming from zarr (in_memory=False), with its prefetch thread
  ram        weatherens Sampler with the split in RAM
and prints samples/s and the ratios (goal: sampler >= 90 % of raw, ram >= 10,000 samples/s).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from weatherens import grid
from weatherens.config import DataConfig
from weatherens.data import era5
from weatherens.data.pipeline import Sampler

LEVEL_VARS = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")
SURFACE_VARS = ("surface_pressure", "2m_temperature")
LEVELS = (250, 500, 700, 850)


def build_store(path: Path, years: float) -> Path:
    if (path / "zarr.json").exists():
        return path
    ntime = int(years * 365 * 4)
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(64)
    times = np.datetime64("2000-01-01", "ns") + np.arange(ntime) * np.timedelta64(6, "h")
    rng = np.random.default_rng(0)
    coords = {"time": times, "level": np.array(LEVELS), "latitude": lat, "longitude": lon}
    skeleton = xr.Dataset(coords=coords)
    for v in LEVEL_VARS:
        skeleton[v] = (("time", "level", "latitude", "longitude"), np.zeros((ntime, 4, 32, 64), np.float32))
    for v in SURFACE_VARS:
        skeleton[v] = (("time", "latitude", "longitude"), np.zeros((ntime, 32, 64), np.float32))
    encoding = {v: {"chunks": (1,) + skeleton[v].shape[1:]} for v in skeleton.data_vars}
    skeleton.to_zarr(path, mode="w", compute=False, encoding=encoding, zarr_format=3)
    group = zarr.open_group(path, mode="r+")
    block = 500
    for start in range(0, ntime, block):
        stop = min(ntime, start + block)
        for v in skeleton.data_vars:
            shape = (stop - start,) + skeleton[v].shape[1:]
            group[v][start:stop] = rng.standard_normal(shape, dtype=np.float32)
    return path


def raw_read(path: Path, windows: np.ndarray) -> float:
    """Seconds to read every window with zarr-python directly; windows (n, w) of time indices."""
    group = zarr.open_group(path, mode="r")
    arrays = [group[v] for v in LEVEL_VARS + SURFACE_VARS]
    t0 = time.perf_counter()
    for w in windows:
        for a in arrays:
            a[w[0] : w[-1] + 1]
    return time.perf_counter() - t0


def sampler_read(sampler: Sampler, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in sampler.iterate(start_step=0, num_steps=steps):
        pass
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("cache/bench"))
    p.add_argument("--years", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=60)
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = build_store(args.workdir / f"loader_{args.years:g}y.zarr", args.years)
    cfg = DataConfig(variables=LEVEL_VARS + SURFACE_VARS, levels=LEVELS, batch_size=args.batch_size, rollout_steps=1)
    ds = era5.open(path, cfg.variables, cfg.levels)
    print(f"store {path}: {ds.sizes['time']} times, 18 channels, 32 x 64, time chunk 1")

    disk = Sampler(ds, cfg, in_memory=False)
    steps = min(args.batches, len(disk))
    windows = np.concatenate(
        [disk.anchors[disk.sample_indices(s)][:, None] + disk.offsets[None, :] for s in range(steps)]
    )
    n = len(windows)
    raw_read(path, windows[:32])  # warm the file cache for both readers alike
    sampler_read(disk, 2)
    t_raw = raw_read(path, windows)
    t_disk = sampler_read(disk, steps)
    t0 = time.perf_counter()
    ram = Sampler(ds, cfg, in_memory=True)
    t_load = time.perf_counter() - t0
    ram_steps = 1000
    t_ram = sampler_read(ram, ram_steps)
    n_ram = ram_steps * args.batch_size

    rate_raw, rate_disk, rate_ram = n / t_raw, n / t_disk, n_ram / t_ram
    print(f"\n{'reader':<22}{'samples/s':>12}{'vs raw zarr':>14}")
    print(f"{'raw zarr (reference)':<22}{rate_raw:>12,.0f}{1.0:>14.2f}")
    print(f"{'sampler from zarr':<22}{rate_disk:>12,.0f}{rate_disk / rate_raw:>14.2f}")
    print(f"{'sampler from RAM':<22}{rate_ram:>12,.0f}{rate_ram / rate_raw:>14.2f}")
    print(f"\nRAM load of the whole store: {t_load:.1f} s; batch {args.batch_size}, {n} zarr samples, {n_ram} RAM samples")
    print(f"goals: sampler/raw >= 0.90 -> {'met' if rate_disk / rate_raw >= 0.9 else 'NOT met'}; "
          f"RAM >= 10,000 samples/s -> {'met' if rate_ram >= 10_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
