"""Normalization statistics, computed out of core in one pass over a canonical dataset.

For every data variable on the (latitude, longitude) grid, per level where it has levels:

- ``mean``, ``std``: the area-weighted mean and standard deviation over (time, latitude,
  longitude), weights `grid.latitude_weights` (cell areas). Unlike GraphCast's statistics,
  which are unweighted means over grid points, these are area-weighted: on a regular grid an
  unweighted mean counts the many small polar cells as much as the large tropical ones and so
  overweights the poles.
- ``residual_std``: the area-weighted standard deviation of x(t + dt) - x(t) for dt =
  `timestep_hours`, the scale of the residual a one-step model predicts. The store's own step
  may be finer (hourly ERA5 with dt = 6 h pairs times 6 h apart, found by their time labels).
  NaN for static variables (no time dimension).

All are population statistics (ddof = 0), float64.

One pass: every reduction (both moments, the residual moments and a count of non-finite
values) is a per-chunk summary gathered by a single `dask.compute`, so each chunk of the store
is read once. Numerics: each chunk is cast to float64 and summarised by its weight sum S0, its
weighted sum S1 and its weighted sum of squares about its *own* mean M2; the summaries are
combined with the pairwise update of Chan, Golub & LeVeque (1979, "Updating formulae and a
pairwise algorithm for computing sample variances"):
    mean = sum S1_b / sum S0_b,  M2 = sum M2_b + sum S0_b (S1_b / S0_b - mean)^2,  var = M2 / sum S0_b,
which avoids the cancellation of sum x^2 - (sum x)^2 / n (geopotential: mean 5e4, std 3e3) with
no shift to choose and no second pass.

Output (`compute`): an xarray Dataset with, per input variable, a float64 DataArray with dims
('statistic', 'level') or ('statistic',), statistic = ['mean', 'std', 'residual_std'], in the
variable's units (its `units` attr kept). Attrs identify what it was computed from (source,
time_start, time_end, time_count, timestep_hours, variables, levels) plus `created`, which
`load_or_compute` uses to decide whether a saved file can be reused.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import cast

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from weatherens import files, grid
from weatherens.data import names
from weatherens.data.era5 import DataError

STATISTICS = ("mean", "std", "residual_std")
_IDENTITY = ("source", "time_start", "time_end", "time_count", "timestep_hours", "variables", "levels")
_CHUNK_BYTES = 64 * 2**20  # time chunks of a store opened without dask
_NPART = 5  # per-chunk summary: S0, S1, M2, count of non-finite values, first bad time index
log = logging.getLogger(__name__)


def _spatial_variables(ds: xr.Dataset) -> list[str]:
    names = cast("list[str]", [n for n, v in ds.data_vars.items() if {"latitude", "longitude"} <= set(v.dims)])
    for n in names:
        extra = set(ds[n].dims) - {"time", "level", "latitude", "longitude"}
        if extra:
            raise ValueError(f"stats: {n} has dims {ds[n].dims}; expected (time, level, latitude, longitude)")
    return names


def _iso(t: np.datetime64) -> str:
    return str(np.datetime_as_string(t, unit="s"))


def describe(ds: xr.Dataset, timestep_hours: int) -> dict[str, str]:
    """What statistics of `ds` depend on, as strings: the identity stored in the attrs."""
    times = ds["time"].values if "time" in ds.coords else np.array([], "datetime64[s]")
    levels = ds["level"].values if "level" in ds.coords else np.array([])
    return {
        "source": str(ds.attrs.get("source", "")),
        "time_start": _iso(times[0]) if times.size else "",
        "time_end": _iso(times[-1]) if times.size else "",
        "time_count": str(times.size),
        "timestep_hours": str(int(timestep_hours)),
        "variables": " ".join(sorted(_spatial_variables(ds))),
        "levels": " ".join(str(int(v)) for v in np.atleast_1d(levels)),
    }


def _time_pairs(times: np.ndarray, timestep_hours: int) -> tuple:
    """Index (earlier, later) of all time pairs `timestep_hours` apart, as slices when regular."""
    if times.size < 2 or not np.all(np.diff(times) > np.timedelta64(0)):
        raise ValueError("stats: time must be strictly increasing with at least two times")
    step = np.diff(times).min()
    delta = np.timedelta64(int(timestep_hours), "h")
    if delta % step != np.timedelta64(0):
        raise ValueError(
            f"stats: timestep {timestep_hours} h is not a multiple of the store's step "
            f"{step / np.timedelta64(1, 'm'):g} min"
        )
    j = np.searchsorted(times, times + delta)
    ok = (j < times.size) & (times[np.minimum(j, times.size - 1)] == times + delta)
    earlier, later = np.flatnonzero(ok), j[ok]
    if earlier.size == 0:
        span = f"{_iso(times[0])} .. {_iso(times[-1])}"
        raise ValueError(f"stats: no two times {timestep_hours} h apart in {span}")
    stride = int(later[0] - earlier[0])
    if earlier.size == times.size - stride and np.all(later - earlier == stride):
        return slice(0, times.size - stride), slice(stride, times.size)
    return earlier, later


def _summarise(block: np.ndarray, weights: np.ndarray, block_info=None) -> np.ndarray:
    """Per-chunk (S0, S1, M2, n_bad, first_bad) for a (time, [level,] lat, lon) block.

    Returns shape (1, [level,] 1, 1, 5): reduced over time, latitude and longitude.
    """
    (t0, _), *_, (la0, la1), _ = block_info[0]["array-location"]
    x = block.astype(np.float64, copy=False)
    w = np.broadcast_to(weights[la0:la1, None], x.shape)
    axes = (0, x.ndim - 2, x.ndim - 1)
    s0 = w.sum(axis=axes, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is reported, not warned
        s1 = (w * x).sum(axis=axes, keepdims=True)
        m2 = (w * (x - s1 / s0) ** 2).sum(axis=axes, keepdims=True)
    bad_t = ~np.isfinite(x).all(axis=(-2, -1), keepdims=True)  # (time, [level,] 1, 1)
    n_bad = (~np.isfinite(x)).sum(axis=axes, keepdims=True).astype(np.float64)
    first = np.where(bad_t.any(axis=0, keepdims=True), t0 + bad_t.argmax(axis=0)[None], np.inf)
    return np.stack([s0, s1, m2, n_bad, first], axis=-1)


def _summaries(arr: dsa.Array, weights: np.ndarray) -> dsa.Array:
    chunks = tuple(
        (1,) * len(c) if ax in (0, arr.ndim - 2, arr.ndim - 1) else c for ax, c in enumerate(arr.chunks)
    )
    return dsa.map_blocks(
        _summarise, arr, weights=weights, chunks=chunks + ((_NPART,),), new_axis=arr.ndim,
        dtype=np.float64, meta=np.empty((0,) * (arr.ndim + 1)),
    )


def _combine(parts: np.ndarray, has_level: bool) -> tuple[np.ndarray, ...]:
    """(mean, std, n_bad, first_bad) per level from the per-chunk summaries (Chan et al. 1979)."""
    if has_level:
        parts = np.moveaxis(parts, 1, 0)
    parts = parts.reshape(parts.shape[0] if has_level else 1, -1, _NPART)
    s0, s1, m2, n_bad, first = np.moveaxis(parts, -1, 0)  # each (level, chunk)
    total = s0.sum(axis=1)
    mean = s1.sum(axis=1) / total
    var = (m2.sum(axis=1) + (s0 * (s1 / s0 - mean[:, None]) ** 2).sum(axis=1)) / total
    return mean, np.sqrt(var), n_bad.sum(axis=1), first.min(axis=1)


def compute(ds: xr.Dataset, timestep_hours: int = 6) -> xr.Dataset:
    """Area-weighted mean, std and residual std of every (lat, lon) variable of `ds`, one pass.

    Args:
      ds: canonical dataset (time, [level,] latitude, longitude), dask-backed or lazily indexed (as
        `era5.open` returns it; then chunked over time in ~64 MiB pieces, never loaded whole);
        variables without both latitude and longitude are ignored.
      timestep_hours: the model step dt of the residual x(t + dt) - x(t); a multiple of the store's
        time step.

    Raises:
      DataError naming the store, variable, level and first time when any value is NaN or inf.
    """
    names = _spatial_variables(ds)
    if not names:
        raise ValueError(f"stats: {ds.attrs.get('source', 'dataset')} has no (latitude, longitude) variables")
    weights = grid.latitude_weights(ds["latitude"].values)
    pairs = _time_pairs(ds["time"].values, timestep_hours) if "time" in ds.dims else None
    todo: list[dsa.Array] = []
    residual_todo: list[dsa.Array | None] = []
    for name in names:
        v = ds[name].transpose(*[d for d in ("time", "level", "latitude", "longitude") if d in ds[name].dims])
        if "time" not in v.dims:
            v = v.expand_dims("time")
        if not isinstance(v.data, dsa.Array):  # lazily indexed store: chunk it, never load it whole
            per_step = max(1, v[0].size * v.dtype.itemsize)
            v = v.chunk({"time": max(1, _CHUNK_BYTES // per_step)})
        arr = v.data
        todo.append(_summaries(arr, weights))
        if "time" in ds[name].dims:
            x64 = arr.astype(np.float64)
            assert pairs is not None  # the dataset has a time axis
            residual_todo.append(_summaries(x64[pairs[1]] - x64[pairs[0]], weights))
        else:
            residual_todo.append(None)
    flat = dask.compute(*todo, *[r for r in residual_todo if r is not None])  # the one pass
    parts, residual_parts = list(flat[: len(names)]), iter(flat[len(names):])

    source = str(ds.attrs.get("source", "")) or "<unnamed dataset>"
    out = {}
    for name, p, r in zip(names, parts, residual_todo):
        has_level = "level" in ds[name].dims
        mean, std, n_bad, first = _combine(p, has_level)
        if n_bad.any():
            k = int(np.flatnonzero(n_bad)[0])
            where = f"{name} at level {int(ds[name]['level'].values[k])}" if has_level else name
            when = _iso(ds["time"].values[int(first[k])]) if "time" in ds[name].dims else "(static)"
            raise DataError(f"{source}: {where}: {int(n_bad[k])} non-finite values (NaN/inf), first at {when}")
        if r is None:
            res_std = np.full_like(mean, np.nan)  # static variable
        else:
            res_std = _combine(next(residual_parts), has_level)[1]
        values = np.stack([mean, std, res_std])  # (statistic, level)
        attrs = {k: v for k, v in ds[name].attrs.items() if k in ("units", "long_name")}
        if has_level:
            levels = {"level": ds[name]["level"].values}
            out[name] = xr.DataArray(values, dims=("statistic", "level"), coords=levels, attrs=attrs)
        else:
            out[name] = xr.DataArray(values[:, 0], dims=("statistic",), attrs=attrs)
    stats = xr.Dataset(out, coords={"statistic": list(STATISTICS)})
    stats.attrs.update(describe(ds, timestep_hours))
    stats.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    stats.attrs["method"] = (
        "area-weighted (grid.latitude_weights), population std, one pass (Chan et al. 1979)"
    )
    return stats


def per_channel(stats: xr.Dataset, channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """{'mean', 'std', 'residual_std'} -> float64 (C,) in the order of `channels` ('variable@level' or 'variable')."""
    out = {s: np.empty(len(channels)) for s in STATISTICS}
    for i, name in enumerate(channels):
        var, level = names.parse_channel(name)
        if var not in stats:
            raise KeyError(f"normalization statistics have no {var!r} (have {sorted(map(str, stats.data_vars))})")
        da = stats[var].sel(level=level) if level is not None else stats[var]
        for s in STATISTICS:
            out[s][i] = float(da.sel(statistic=s))
    return out


def save(stats: xr.Dataset, path: str | os.PathLike) -> None:
    """Write `stats` to netCDF atomically (`files.write_netcdf_atomic`)."""
    files.write_netcdf_atomic(stats, path)


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read statistics written by `save` (fully into memory; the file is closed)."""
    stats = xr.load_dataset(path)
    return stats.assign_coords(statistic=[str(s) for s in stats["statistic"].values])


def load_or_compute(ds: xr.Dataset, path: str | os.PathLike, timestep_hours: int = 6) -> xr.Dataset:
    """The saved statistics at `path` when they were computed from the same data, else compute and save.

    "The same data": equal source, time_start, time_end, time_count, timestep_hours, variables and
    levels (`describe`). An unreadable file is recomputed too.
    """
    path = Path(path)
    want = describe(ds, timestep_hours)
    if path.exists():
        try:
            stats = load(path)
        except (OSError, ValueError) as err:
            log.warning("stats: %s unreadable (%s); recomputing", path, err)
        else:
            have = {k: str(stats.attrs.get(k, "")) for k in _IDENTITY}
            if have == want:
                return stats
            diff = {k: (have[k], want[k]) for k in _IDENTITY if have[k] != want[k]}
            log.info("stats: %s is for other data %s; recomputing", path, diff)
    stats = compute(ds, timestep_hours)
    save(stats, path)
    return stats
