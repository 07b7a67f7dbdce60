"""Open an ERA5-schema store (zarr or netCDF, local path or fsspec URL) in canonical form.

Canonical form (docs/architecture.md): dims `time, level, latitude, longitude`; latitude ascending
(-90 -> 90); longitude 0 -> 360; `level` in hPa; WeatherBench 2 long variable names; `time`
decoded to datetime64. Every quirk of a real store is undone here, once, on the way in:
short names (`t2m`, `z`, ...), latitude descending (ARCO / native ERA5), `(lon, lat)` order,
`isobaricInhPa` / `pressure_level` levels (in Pa or hPa), longitudes in -180 -> 180, and
integer time axes that are not CF (units only in a group attribute such as `time_units`).
"""

from __future__ import annotations

import builtins
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from weatherens import grid
from weatherens.data import names, stored_chunks
from weatherens.errors import InputError

CANONICAL_DIMS = ("time", names.LEAD_DIM, names.MEMBER_DIM, "level", "latitude", "longitude")
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")


class DataError(InputError):
    """A store that cannot serve as asked; the message names the store, variable and problem."""


def _store_name(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("source", "<in-memory dataset>"))


def _read_raw(path_or_url: str | Path, storage_options: dict | None) -> xr.Dataset:
    path = str(path_or_url)
    is_url = "://" in path
    if not is_url and not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such store")
    if path.startswith(("gs://", "gcs://")) and storage_options is None:
        storage_options = {"token": "anon"}  # WeatherBench 2's bucket is public
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*consolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*is not recognized as a component of a Zarr hierarchy.*")
        if path.rstrip("/").endswith(_NETCDF_SUFFIXES):
            return xr.open_dataset(path, chunks=None, decode_timedelta=True)
        try:
            return xr.open_zarr(
                path, chunks=None, consolidated=None, decode_timedelta=True, storage_options=storage_options
            )
        except ImportError as e:  # fsspec's protocol needs a package the core install lacks
            raise ImportError(f"{path}: reading this URL needs {e.name or 'a package'} "
                              f"(pip install 'weatherens[cloud]'): {e}") from e
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
            if is_url:
                raise FileNotFoundError(f"{path}: no zarr store at this URL (no zarr.json, .zgroup or "
                                        f".zmetadata found there)") from e
            raise


def _time_units(ds: xr.Dataset, tname: str) -> tuple[str, str | None] | None:
    """CF units (and calendar) of the time coordinate, from its attrs or the group's attrs."""
    attrs = ds[tname].attrs
    if "units" in attrs:
        return attrs["units"], attrs.get("calendar")
    for key in ("time_units", f"{tname}_units", "units"):
        text = ds.attrs.get(key)
        if isinstance(text, str) and " since " in text:
            m = re.match(r"^(.*?)\s*\((\w+)\)\s*$", text)
            return (m.group(1), m.group(2)) if m else (text, None)
    return None


def _decode_time(ds: xr.Dataset, store: str) -> xr.Dataset:
    tnames = [n for n in ("time", *[a for a, c in names.DIM_ALIASES.items() if c == "time"]) if n in ds.coords]
    if not tnames:
        return ds
    tname = tnames[0]
    if np.issubdtype(ds[tname].dtype, np.datetime64):
        return ds
    units = _time_units(ds, tname)
    if units is None:
        raise DataError(
            f"{store}: time axis '{tname}' holds {ds[tname].dtype} values without CF units "
            "(no 'units' attribute on it and no 'time_units' in the group attributes)"
        )
    unit_text, calendar = units
    coord = ds[tname].copy()
    coord.attrs = {"units": unit_text, **({"calendar": calendar} if calendar else {})}
    decoded = xr.decode_cf(coord.to_dataset(name="_t"))["_t"]
    return ds.assign_coords({tname: decoded.values})


def _rename_dims(ds: xr.Dataset) -> xr.Dataset:
    mapping = {old: new for old, new in names.DIM_ALIASES.items() if old in ds.variables or old in ds.dims}
    for old, new in list(mapping.items()):
        if new in ds.variables or new in ds.dims:
            mapping.pop(old)
    return ds.rename(mapping) if mapping else ds


def _rename_variables(ds: xr.Dataset, store: str) -> xr.Dataset:
    mapping = {}
    for v in ds.data_vars:
        long = names.long_name(str(v))
        if long != v:
            if long in ds.data_vars:
                raise DataError(f"{store}: both '{v}' and '{long}' present; cannot tell which is {long}")
            mapping[v] = long
    out = ds.rename(mapping) if mapping else ds
    for old, new in mapping.items():
        out[new].attrs.setdefault("short_name", old)
    for v in out.data_vars:
        if "units" not in out[v].attrs and v in names.UNITS:
            out[v].attrs["units"] = names.UNITS[v]
    return out


def _canonical_level(ds: xr.Dataset) -> xr.Dataset:
    if "level" not in ds.coords:
        return ds
    level = ds["level"]
    values = np.asarray(level.values, dtype=np.float64)
    units = str(level.attrs.get("units", "")).lower()
    if units == "pa" or (units not in ("hpa", "millibars", "mbar") and values.max(initial=0) > 1100):
        values = values / 100.0
    as_int = np.round(values)
    values = as_int.astype(np.int64) if np.allclose(values, as_int) else values
    ds = ds.assign_coords(level=("level", values, {"units": "hPa", "long_name": "pressure level"}))
    return ds.sortby("level")


def _canonical_horizontal(ds: xr.Dataset, store: str) -> xr.Dataset:
    for dim in ("latitude", "longitude"):
        if dim not in ds.coords:
            raise DataError(f"{store}: no '{dim}' coordinate (has {sorted(map(str, ds.coords))})")
    lon = np.mod(np.asarray(ds["longitude"].values, dtype=np.float64), 360.0)
    ds = ds.assign_coords(longitude=("longitude", lon, {"units": "degrees_east", "long_name": "longitude"}))
    ds = ds.sortby("longitude")
    if ds.indexes["longitude"].has_duplicates:
        raise DataError(f"{store}: longitude has duplicate values after wrapping to 0..360")
    lat_attrs = {"units": "degrees_north", "long_name": "latitude"}
    ds = ds.assign_coords(latitude=("latitude", np.asarray(ds["latitude"].values, np.float64), lat_attrs))
    return ds.sortby("latitude")


def _canonical_time(ds: xr.Dataset, store: str) -> xr.Dataset:
    if "time" in ds.coords and "time" not in ds.dims and ds["time"].ndim == 0:
        ds = ds.expand_dims("time")
    if "time" not in ds.dims:
        return ds
    index = ds.indexes["time"]
    if index.has_duplicates:
        dup = index[index.duplicated()][0]
        raise DataError(f"{store}: duplicate times in the time axis (first: {np.datetime64(dup, 's')})")
    return ds if index.is_monotonic_increasing else ds.sortby("time")


def _transpose(ds: xr.Dataset) -> xr.Dataset:
    return ds.transpose(*[d for d in CANONICAL_DIMS if d in ds.dims], ...)


def _select(
    ds: xr.Dataset,
    store: str,
    variables: Sequence[str] | None,
    levels: Sequence[float] | None,
    time: slice | None,
) -> xr.Dataset:
    if variables is not None:
        wanted = [names.long_name(v) for v in variables]
        missing = [v for v in wanted if v not in ds.data_vars]
        if missing:
            raise DataError(f"{store}: variable(s) {missing} not in store (has {sorted(map(str, ds.data_vars))})")
        ds = ds[wanted]
    if levels is not None and "level" in ds.dims:
        have = ds["level"].values
        absent = [lev for lev in levels if not np.isin(lev, have)]
        if absent:
            leveled = ", ".join(sorted(str(v) for v in ds.data_vars if "level" in ds[v].dims))
            shown = ", ".join(f"{h:g}" for h in have)
            raise DataError(f"{store}: {leveled}: level(s) {', '.join(f'{m:g}' for m in absent)} not in store (has {shown})")
        ds = ds.sel(level=np.asarray(levels, dtype=have.dtype))
    if time is not None:
        if "time" not in ds.dims:
            raise DataError(f"{store}: no time axis to select {time.start}..{time.stop} from")
        ds = ds.sel(time=time)
        if ds.sizes["time"] == 0:
            raise DataError(f"{store}: no times in {time.start}..{time.stop}")
    return ds


def open(  # noqa: A001 - the loader's natural name, as in xarray
    path_or_url: str | Path,
    variables: Sequence[str] | None = None,
    levels: Sequence[float] | None = None,
    time: slice | None = None,
    *,
    storage_options: dict | None = None,
    with_stored_chunks: bool = False,
) -> xr.Dataset:
    """Open an ERA5-schema store lazily and return it in canonical form.

    Args:
      path_or_url: a zarr store (local path, or any fsspec URL such as
        'gs://weatherbench2/datasets/era5/...zarr', which needs the `cloud` extra) or a
        netCDF file.
      variables: short or long names; None keeps all. Returned under their long names.
      levels: pressure levels in hPa to keep (for the variables that have levels).
      time: a slice of times (strings or datetime64), inclusive as in xarray.
      with_stored_chunks: also return, as `stored_chunks.PREFIX`-named coordinates, where the
        store's chunks lie in the canonical order (`stored_chunks.runs`), for readers that plan
        dask chunks by them.

    Returns:
      An xarray.Dataset backed by lazily indexed arrays (no dask, nothing read yet):
      data variables `(time, level, latitude, longitude)` or `(time, latitude, longitude)`,
      float as stored, units in attrs; `attrs['source']` names the store.

    Raises:
      FileNotFoundError for a missing local path; DataError naming the store, the variable
      and the problem for a missing variable or level, an undecodable or duplicated time axis,
      or an empty time selection.
    """
    store = str(path_or_url)
    ds = _read_raw(path_or_url, storage_options)
    ds = _decode_time(ds, store)
    ds = _rename_dims(ds)
    ds = _rename_variables(ds, store)
    if with_stored_chunks:
        ds = stored_chunks.tag(ds)
    ds = _canonical_level(ds)
    ds = _canonical_horizontal(ds, store)
    ds = _canonical_time(ds, store)
    ds = _transpose(ds)
    ds.attrs["source"] = store
    return _select(ds, store, variables, levels, time)


def time_step(ds: xr.Dataset) -> np.timedelta64:
    """The store's time step; raises DataError if the axis is irregular or too short."""
    store = _store_name(ds)
    if "time" not in ds.dims or ds.sizes["time"] < 2:
        raise DataError(f"{store}: fewer than two times; no time step to train on")
    steps = np.diff(ds["time"].values).astype("timedelta64[s]")
    uniq, counts = np.unique(steps, return_counts=True)
    if uniq.size > 1:
        listed = ", ".join(f"{s / np.timedelta64(1, 'h'):g} h ({c}x)" for s, c in builtins.zip(uniq, counts))
        first_bad = int(np.argmax(steps != uniq[np.argmax(counts)]))
        raise DataError(
            f"{store}: irregular time step ({listed}); first off-step gap after "
            f"{np.datetime64(ds['time'].values[first_bad], 's')}"
        )
    return uniq[0]


def check_training_ready(
    ds: xr.Dataset,
    timestep_hours: int = 6,
    *,
    require_global: bool = True,
) -> int:
    """Check that a canonical dataset can serve as training data at a given model step.

    Checks: a regular time axis whose step divides `timestep_hours`; a global regular grid
    (unless `require_global=False`). NaNs are checked where the data is read (statistics pass
    and sampler), since looking here would read the whole store.

    Returns:
      The stride: how many store steps make one model step (e.g. 6 for hourly ERA5).
    """
    store = _store_name(ds)
    step = time_step(ds)
    model_step = np.timedelta64(int(timestep_hours) * 3600, "s")
    if model_step % step != np.timedelta64(0, "s"):
        raise DataError(
            f"{store}: time step {step / np.timedelta64(1, 'h'):g} h does not divide the model step "
            f"{timestep_hours} h"
        )
    if require_global and not grid.is_global(ds["latitude"].values, ds["longitude"].values):
        lat, lon = ds["latitude"].values, ds["longitude"].values
        raise DataError(
            f"{store}: regional grid (latitude {lat.min():g}..{lat.max():g}, longitude "
            f"{lon.min():g}..{lon.max():g}, {lon.size} points); a global model needs the whole sphere"
        )
    return int(model_step // step)
