"""Verification's input and output: open forecasts and truths, line them up by valid time, write scores.

A forecast is any store in WeatherBench 2 format: dims `time` (initialisation),
`prediction_timedelta` (or `lead_time`), `number` (or `realization`), then `level, latitude,
longitude` in any of the layouts `weatherens.data.open` accepts. A forecast without a member
dim is a one-member ensemble. The truth is anything `data.open` opens (ERA5, the physics world).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from weatherens import files
from weatherens.data import era5, regrid, stored_chunks
from weatherens.data.names import LEAD_DIM as LEAD
from weatherens.data.names import MEMBER_DIM as MEMBER

log = logging.getLogger(__name__)
_CHUNK_BYTES = 128 * 2**20  # dask chunk target for member x space blocks


def open_forecast(path: str | Path, variables: Sequence[str] | None = None) -> xr.Dataset:
    """A WB2-format forecast in canonical form, dask-chunked with all members, levels and longitudes
    together; along init, lead and latitude by the store's own chunks (so each stored chunk is read
    once), or by (init, lead) and latitude rows within _CHUNK_BYTES for stores without zarr chunks.

    Raises DataError naming the store when the lead dim is missing or not a time span.
    """
    ds = era5.open(path, variables, with_stored_chunks=True)
    store = str(path)
    if LEAD not in ds.dims:
        raise era5.DataError(f"{store}: no lead-time dim ('prediction_timedelta' or 'lead_time'); dims are {dict(ds.sizes)}")
    if not np.issubdtype(ds[LEAD].dtype, np.timedelta64):
        raise era5.DataError(f"{store}: lead dim '{LEAD}' is {ds[LEAD].dtype}, not a time span (CF units missing?)")
    if "init_complete" in ds:  # a weatherens forecast: score only the initialisations written whole
        complete = ds["init_complete"].values == 1
        if not complete.all():
            log.warning("verify: %s: %d initialisation(s) incomplete; left out", store, int((~complete).sum()))
            ds = ds.isel(time=np.flatnonzero(complete))
    ds = ds.drop_vars([v for v in ds.data_vars if not {"latitude", "longitude"} <= set(ds[v].dims)])
    if MEMBER not in ds.dims:
        ds = ds.expand_dims({MEMBER: 1})
    ds = ds.transpose(*[d for d in era5.CANONICAL_DIMS if d in ds.dims], ...)
    members = ds.sizes[MEMBER]
    if members < 1 or ds.sizes["time"] < 1 or ds.sizes[LEAD] < 1:
        raise era5.DataError(f"{store}: an empty forecast ({members} members, {ds.sizes['time']} complete inits, "
                             f"{ds.sizes[LEAD]} leads)")
    per_row = members * ds.sizes.get("level", 1) * ds.sizes["longitude"] * 8
    lat_chunk = int(max(1, min(ds.sizes["latitude"], _CHUNK_BYTES // per_row)))
    fallback = {"time": 1, LEAD: 1, MEMBER: -1, "level": -1, "latitude": lat_chunk, "longitude": -1}
    return stored_chunks.chunk_like_store(ds, fallback)


def open_truth(path: str | Path, variables: Sequence[str] | None = None) -> xr.Dataset:
    """The truth in canonical form, dask-chunked by the store's time chunks (one time step at a time
    for stores without zarr chunks), whole fields."""
    ds = era5.open(path, variables, with_stored_chunks=True)
    return stored_chunks.chunk_like_store(ds, {"time": 1, "level": -1, "latitude": -1, "longitude": -1})


def match_grid(truth: xr.DataArray, forecast: xr.DataArray, store: str) -> xr.DataArray:
    """The truth on the forecast's grid: as is when equal, conservatively regridded when finer."""
    flat, flon = forecast["latitude"].values, forecast["longitude"].values
    tlat, tlon = truth["latitude"].values, truth["longitude"].values
    if tlat.shape == flat.shape and tlon.shape == flon.shape and np.allclose(tlat, flat) and np.allclose(tlon, flon):
        return truth.assign_coords(latitude=flat, longitude=flon)
    if tlat.size >= flat.size and tlon.size >= flon.size:
        return regrid.conservative(truth, flat, flon)
    raise era5.DataError(
        f"{store}: {truth.name}: truth grid {tlon.size} x {tlat.size} is coarser than the forecast's "
        f"{flon.size} x {flat.size}; regrid the forecast to the truth's grid first"
    )


def match_levels(truth: xr.DataArray, forecast: xr.DataArray, store: str) -> xr.DataArray:
    if "level" not in forecast.dims:
        return truth
    have = truth["level"].values if "level" in truth.dims else np.array([])
    missing = [int(x) for x in forecast["level"].values if x not in have]
    if missing:
        raise era5.DataError(f"{store}: {truth.name}: level(s) {missing} not in the truth (has {list(map(int, have))})")
    return truth.sel(level=forecast["level"].values)


def scores_path(out: Path, name: str, several: bool) -> Path:
    """`out` for one forecast; `out` with the forecast's name before the suffix for several."""
    return out.with_name(f"{out.stem}.{name}{out.suffix or '.nc'}") if several else out


def write_scores(scores: xr.Dataset, path: Path) -> None:
    """netCDF written to a temporary name in the same folder, then renamed: never half-written."""
    files.write_netcdf_atomic(scores, path)
