"""Normalization statistics: equal to numpy's weighted averages, one pass, NaN detection, caching."""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

from weatherens import grid
from weatherens.data import stats
from weatherens.data.era5 import DataError

LEVELS = [500, 850]


def _dataset(ntime=20, step_hours=3, chunk=6, seed=0):
    """Two variables (one with levels) + a static and a non-grid one, dask-chunked over time."""
    rng = np.random.default_rng(seed)
    lat, lon = grid.equiangular_latitudes(8), grid.longitudes(16)
    times = np.datetime64("2000-01-01T00") + np.arange(ntime) * np.timedelta64(step_hours, "h")
    t = (250 + 10 * rng.normal(size=(ntime, 2, 8, 16))).astype(np.float32)
    # surface pressure: large mean, small spread (a cancellation test for the variance)
    sp = 1e5 + 500 * rng.normal(size=(ntime, 8, 16)) + np.cumsum(rng.normal(size=ntime))[:, None, None]
    ds = xr.Dataset(
        {
            "temperature": (("time", "level", "latitude", "longitude"), t, {"units": "K"}),
            "surface_pressure": (("time", "latitude", "longitude"), sp, {"units": "Pa"}),
            "land_sea_mask": (("latitude", "longitude"), rng.uniform(size=(8, 16))),
            "time_only": (("time",), np.arange(ntime)),
        },
        coords={"time": times, "level": LEVELS, "latitude": lat, "longitude": lon},
        attrs={"source": "memory://test-store"},
    )
    return ds.chunk({"time": chunk})


def _weighted_std(x, lat):
    """Reference: np.average over (time, lat, lon) with area weights, float64."""
    w = np.broadcast_to(grid.latitude_weights(lat)[:, None], x.shape)
    mean = np.average(x, weights=w)
    return mean, np.sqrt(np.average((x - mean) ** 2, weights=w))


def _pairs(times, hours):
    index = {t: i for i, t in enumerate(times)}
    dt = np.timedelta64(hours, "h")
    pairs = [(i, index[t + dt]) for i, t in enumerate(times) if t + dt in index]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _check_against_numpy(ds, result, hours):
    lat = ds.latitude.values
    earlier, later = _pairs(ds.time.values, hours)
    for name in ("temperature", "surface_pressure"):
        values = ds[name].values.astype(np.float64)
        per_level = [values[:, k] for k in range(len(LEVELS))] if name == "temperature" else [values]
        for k, x in enumerate(per_level):
            mean, std = _weighted_std(x, lat)
            _, residual_std = _weighted_std(x[later] - x[earlier], lat)
            got = result[name].isel(level=k) if name == "temperature" else result[name]
            np.testing.assert_allclose(got.sel(statistic="mean"), mean, rtol=1e-12)
            np.testing.assert_allclose(got.sel(statistic="std"), std, rtol=1e-10)
            np.testing.assert_allclose(got.sel(statistic="residual_std"), residual_std, rtol=1e-10)


def test_matches_numpy_with_finer_store_step():
    ds = _dataset(step_hours=3)
    result = stats.compute(ds, timestep_hours=6)  # 3-hourly store, 6-hour residual: stride 2
    assert result.temperature.dims == ("statistic", "level")
    assert result.surface_pressure.dims == ("statistic",)
    assert list(result.statistic.values) == ["mean", "std", "residual_std"]
    assert result.temperature.dtype == np.float64 and result.temperature.attrs["units"] == "K"
    assert "time_only" not in result
    _check_against_numpy(ds, result, 6)
    mean, std = _weighted_std(ds.land_sea_mask.values, ds.latitude.values)
    np.testing.assert_allclose(result.land_sea_mask.values[:2], [mean, std], rtol=1e-12)
    assert np.isnan(result.land_sea_mask.sel(statistic="residual_std"))
    assert result.attrs["source"] == "memory://test-store"
    assert result.attrs["time_start"] == "2000-01-01T00:00:00" and result.attrs["timestep_hours"] == "6"


def test_matches_numpy_with_missing_times():
    ds = _dataset(step_hours=3).isel(time=[i for i in range(20) if i not in (7, 8, 15)])
    _check_against_numpy(ds, stats.compute(ds, timestep_hours=6), 6)


def test_timestep_must_be_a_multiple_of_the_store_step():
    with pytest.raises(ValueError, match="not a multiple"):
        stats.compute(_dataset(step_hours=3), timestep_hours=4)


def test_non_finite_values_raise_data_error():
    ds = _dataset().compute()
    ds["temperature"][13, 1, 3, 4] = np.nan
    ds["temperature"][17, 1, 0, 0] = np.inf
    message = r"memory://test-store: temperature at level 850: 2 non-finite .* first at 2000-01-02T15"
    with pytest.raises(DataError, match=message):
        stats.compute(ds.chunk({"time": 6}))


class _CountingArray:
    """A numpy array that records every read, to check that each chunk is read once."""

    def __init__(self, values):
        self.values, self.shape, self.dtype, self.ndim = values, values.shape, values.dtype, values.ndim
        self.reads = []

    def __getitem__(self, key):
        out = self.values[key]
        if out.size:
            self.reads.append(key)
        return out


def test_one_pass_reads_each_chunk_once():
    ds = _dataset().compute()
    sources = {}
    for name in ("temperature", "surface_pressure"):
        sources[name] = _CountingArray(ds[name].values)
        chunks = (6,) + ds[name].shape[1:]
        meta = np.empty((0,) * ds[name].ndim, ds[name].dtype)
        lazy = dsa.from_array(sources[name], chunks=chunks, meta=meta)
        ds[name] = ds[name].copy(data=lazy)
        sources[name].reads.clear()
    stats.compute(ds, timestep_hours=6)
    for name, source in sources.items():
        starts = sorted(key[0].start for key in source.reads)
        assert starts == [0, 6, 12, 18], (name, source.reads)  # 4 chunks of time, each read once


def test_load_or_compute_reuses_and_recomputes(tmp_path, monkeypatch):
    calls = []
    compute = stats.compute
    monkeypatch.setattr(stats, "compute", lambda *a, **k: calls.append(1) or compute(*a, **k))
    path = tmp_path / "stats" / "normalization.nc"
    ds = _dataset()
    first = stats.load_or_compute(ds, path, timestep_hours=6)
    assert len(calls) == 1 and path.exists()
    assert not list(path.parent.glob(".*tmp*"))
    mtime = path.stat().st_mtime_ns
    again = stats.load_or_compute(ds, path, timestep_hours=6)
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime
    xr.testing.assert_allclose(again, first, rtol=0, atol=0)
    assert list(again.statistic.values) == list(stats.STATISTICS)
    shorter = ds.isel(time=slice(0, 12))
    other = stats.load_or_compute(shorter, path, timestep_hours=6)
    assert len(calls) == 2 and other.attrs["time_end"] == "2000-01-02T09:00:00"
    stats.load_or_compute(shorter, path, timestep_hours=12)
    assert len(calls) == 3
    assert stats.load(path).attrs["timestep_hours"] == "12"
    path.write_text("not netcdf")
    stats.load_or_compute(shorter, path, timestep_hours=12)
    assert len(calls) == 4


def test_store_opened_by_the_loader_is_chunked_not_loaded(tmp_path, monkeypatch):
    """era5.open gives lazily indexed arrays; compute must chunk them over time, not read them whole."""
    from weatherens.data import era5

    ds = _dataset(ntime=24, step_hours=6).drop_vars(["land_sea_mask", "time_only"])
    ds.load().to_zarr(tmp_path / "s.zarr", zarr_format=3, consolidated=False)
    opened = era5.open(tmp_path / "s.zarr")
    assert not isinstance(opened["temperature"].data, dsa.Array)
    monkeypatch.setattr(stats, "_CHUNK_BYTES", 5 * 2 * 8 * 16 * 4)  # five time steps of temperature a chunk
    seen = []
    real = stats._summaries
    monkeypatch.setattr(stats, "_summaries", lambda arr, w: seen.append(arr.numblocks[0]) or real(arr, w))
    _check_against_numpy(ds.load(), stats.compute(opened, 6), 6)
    assert seen[0] == 5  # 24 times in chunks of 5
