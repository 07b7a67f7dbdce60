#!/usr/bin/env python3
"""Trim the real ERA5 samples of the project's shared/era5/ folder to the copies shipped in tests/data/era5/.

    python scripts/make_era5_test_samples.py [--source ../shared/era5] [--out tests/data/era5]

The copies keep every quirk the loader's tests need and only the variables and times they use:
- era5_global_1deg_7day_surface.zarr: the first 12 of 24 times (7 and 8 h steps, 2026-03-25T00 to
  2026-03-28T12), t2m, msl, u10, v10 (tp dropped), byte for byte the same chunks, codecs, attributes,
  non-CF integer time axis and stray sample_info.json (its counts updated);
- era5_tl31_19590102T00.nc: geopotential, temperature, u and v at 250, 500 and 850 hPa, dims still
  (level, longitude, latitude), Gaussian-like latitudes ascending.

ERA5 is (c) ECMWF / Copernicus Climate Change Service, licensed CC-BY 4.0: "Contains modified Copernicus
Climate Change Service information 2026." (tests/data/era5/README.md says where each file came from).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import xarray as xr
import zarr

ROOT = Path(__file__).resolve().parents[1]
SURFACE = "era5_global_1deg_7day_surface.zarr"
UPPER_AIR = "era5_tl31_19590102T00.nc"
SURFACE_VARIABLES = ("t2m", "msl", "u10", "v10")
SURFACE_TIMES = 12
UPPER_AIR_VARIABLES = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")
UPPER_AIR_LEVELS = (250, 500, 850)


def trim_surface(source: Path, out: Path) -> None:
    """The first SURFACE_TIMES times of SURFACE_VARIABLES, with the source's chunks, codecs and attributes."""
    src = zarr.open_group(source, mode="r", zarr_format=3)
    dst = zarr.open_group(out, mode="w", zarr_format=3)
    dst.attrs.update(src.attrs.asdict())
    for name in ("latitude", "longitude", "time_index", *SURFACE_VARIABLES):
        a = src[name]
        timed = a.metadata.dimension_names[0] == "time_index"
        data = a[:SURFACE_TIMES] if timed else a[:]
        b = dst.create_array(name, shape=data.shape, dtype=a.dtype, chunks=a.chunks, fill_value=a.fill_value,
                             compressors=a.compressors, dimension_names=a.metadata.dimension_names,
                             attributes=a.attrs.asdict())
        b[:] = data
    info = json.loads((source / "sample_info.json").read_text())
    times = zarr.open_array(out / "time_index", mode="r")[:]
    info.update(vars=list(SURFACE_VARIABLES), timesteps=SURFACE_TIMES, time_range=[str(times[0]), str(times[-1])])
    (out / "sample_info.json").write_text(json.dumps(info, indent=2))


def trim_upper_air(source: Path, out: Path) -> None:
    ds = xr.open_dataset(source)[list(UPPER_AIR_VARIABLES)].sel(level=list(UPPER_AIR_LEVELS))
    ds.to_netcdf(out, encoding={v: {"zlib": True, "complevel": 4} for v in ds.data_vars})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "era5")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "era5")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / SURFACE).exists():
        shutil.rmtree(args.out / SURFACE)
    trim_surface(args.source / SURFACE, args.out / SURFACE)
    trim_upper_air(args.source / UPPER_AIR, args.out / UPPER_AIR)
    for path in sorted(args.out.iterdir()):
        size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
        print(f"{path}: {size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
