"""The loader undoes every store quirk, and says clearly what it cannot serve."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from helpers import canonical_dataset, serve_directory, write_zarr
from weatherens import data
from weatherens.data import stored_chunks


def assert_same_as_canonical(opened: xr.Dataset, canonical: xr.Dataset) -> None:
    assert set(opened.data_vars) == set(canonical.data_vars)
    for v in canonical.data_vars:
        assert opened[v].dims == canonical[v].dims, v
        np.testing.assert_array_equal(opened[v].values, canonical[v].values, err_msg=v)
    for c in ("time", "level", "latitude", "longitude"):
        np.testing.assert_array_equal(opened[c].values, canonical[c].values, err_msg=c)


def wb2_layout(ds):  # WeatherBench 2 zarrs: (time, longitude, latitude), latitude ascending
    return ds.transpose("time", "level", "longitude", "latitude")


def arco_layout(ds):  # native ERA5: latitude 90 -> -90, short names, isobaricInhPa, longitude -180..180
    out = ds.isel(latitude=slice(None, None, -1)).rename(
        {"temperature": "t", "geopotential": "z", "2m_temperature": "t2m", "level": "isobaricInhPa"}
    )
    lon = out["longitude"].values
    out = out.assign_coords(longitude=np.where(lon >= 180, lon - 360, lon)).sortby("longitude")
    return out.rename({"latitude": "lat", "longitude": "lon"})


def levels_in_pa(ds):
    out = ds.rename({"level": "plev"})
    return out.assign_coords(plev=("plev", out["plev"].values * 100.0, {"units": "Pa"}))


def integer_hours_since_1940(ds):  # like the real 1-degree sample: time_index + group attr time_units
    hours = (ds["time"].values - np.datetime64("1940-01-01", "ns")) // np.timedelta64(1, "h")
    out = ds.assign_coords(time=hours.astype(np.int64)).rename({"time": "time_index"})
    out.attrs["time_units"] = "hours since 1940-01-01 00:00 (proleptic_gregorian)"
    return out


def shuffled_time(ds):
    return ds.isel(time=np.random.default_rng(1).permutation(ds.sizes["time"]))


@pytest.mark.parametrize(
    "layout", [wb2_layout, arco_layout, levels_in_pa, integer_hours_since_1940, shuffled_time], ids=lambda f: f.__name__
)
def test_every_layout_opens_to_the_same_canonical_dataset(tmp_path, canonical, layout):
    path = write_zarr(layout(canonical), tmp_path / "store.zarr")
    opened = data.open(path)
    assert_same_as_canonical(opened, canonical)
    assert opened["temperature"].attrs["units"] == "K"
    assert opened.attrs["source"] == str(path)


def test_short_names_are_selectable_and_levels_and_time_select(tmp_path, canonical):
    path = write_zarr(arco_layout(canonical), tmp_path / "arco.zarr")
    opened = data.open(path, variables=["t", "t2m"], levels=[850], time=slice("2000-01-01T12", "2000-01-02"))
    assert list(opened.data_vars) == ["temperature", "2m_temperature"]
    assert opened["temperature"].attrs["short_name"] == "t"
    expected = canonical[["temperature", "2m_temperature"]].sel(level=[850], time=slice("2000-01-01T12", "2000-01-02"))
    assert opened.sizes["time"] == 6  # an end date includes its whole day, as in xarray
    assert_same_as_canonical(opened, expected)


def test_opening_is_lazy(tmp_path, canonical):
    path = write_zarr(canonical, tmp_path / "s.zarr")
    opened = data.open(path)
    assert not opened["temperature"].variable._in_memory


def test_fsspec_url_opens(canonical):
    url = "memory://weatherens-test/store.zarr"
    canonical.to_zarr(url, mode="w", consolidated=False, zarr_format=3)
    assert_same_as_canonical(data.open(url), canonical)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_http_url_opens_like_the_local_store(tmp_path, canonical, zarr_format):
    # WeatherBench 2's public stores are consolidated zarr v2 read over HTTPS; here HTTP on 127.0.0.1
    wb2_layout(canonical).to_zarr(tmp_path / "wb2.zarr", mode="w", consolidated=True, zarr_format=zarr_format)
    with serve_directory(tmp_path) as base_url:
        opened = data.open(f"{base_url}/wb2.zarr", variables=["temperature", "2m_temperature"], levels=[850])
        assert opened.attrs["source"] == f"{base_url}/wb2.zarr"
        assert_same_as_canonical(opened, canonical[["temperature", "2m_temperature"]].sel(level=[850]))
        with pytest.raises(FileNotFoundError, match=r"/absent\.zarr: no zarr store at this URL"):
            data.open(f"{base_url}/absent.zarr")


def test_missing_variable_names_store_and_variable(tmp_path, canonical):
    path = write_zarr(canonical, tmp_path / "s.zarr")
    with pytest.raises(data.DataError, match=r"s\.zarr.*'specific_humidity'.*not in store"):
        data.open(path, variables=["q"])


def test_missing_level_names_store_variable_and_levels(tmp_path, canonical):
    path = write_zarr(canonical, tmp_path / "s.zarr")
    with pytest.raises(data.DataError, match=r"s\.zarr: geopotential, temperature: level\(s\) 700 not in store \(has 500, 850\)"):
        data.open(path, levels=[500, 700])


def test_duplicate_times_are_refused(tmp_path, canonical):
    dup = xr.concat([canonical, canonical.isel(time=[3])], dim="time")
    path = write_zarr(dup, tmp_path / "dup.zarr")
    with pytest.raises(data.DataError, match=r"dup\.zarr: duplicate times.*2000-01-01T18:00:00"):
        data.open(path)


def test_integer_time_without_units_is_refused(tmp_path, canonical):
    out = canonical.assign_coords(time=np.arange(canonical.sizes["time"])).rename({"time": "time_index"})
    path = write_zarr(out, tmp_path / "nounits.zarr")
    with pytest.raises(data.DataError, match=r"nounits\.zarr: time axis 'time_index'.*without CF units"):
        data.open(path)


def test_empty_time_selection_is_refused(tmp_path, canonical):
    path = write_zarr(canonical, tmp_path / "s.zarr")
    with pytest.raises(data.DataError, match=r"s\.zarr: no times in 1999-01-01..1999-02-01"):
        data.open(path, time=slice("1999-01-01", "1999-02-01"))


def test_irregular_time_step_is_not_training_data(tmp_path, canonical):
    irregular = canonical.isel(time=[0, 1, 2, 4, 5, 6, 7])
    path = write_zarr(irregular, tmp_path / "irr.zarr")
    with pytest.raises(data.DataError, match=r"irr\.zarr: irregular time step \(6 h \(5x\), 12 h \(1x\)\)"):
        data.check_training_ready(data.open(path))


def test_step_must_divide_the_model_step(tmp_path):
    path = write_zarr(canonical_dataset(step_hours=4), tmp_path / "four.zarr")
    with pytest.raises(data.DataError, match=r"four\.zarr: time step 4 h does not divide the model step 6 h"):
        data.check_training_ready(data.open(path), timestep_hours=6)


def test_hourly_store_gives_stride_six(tmp_path):
    path = write_zarr(canonical_dataset(ntime=30, step_hours=1), tmp_path / "hourly.zarr")
    assert data.check_training_ready(data.open(path), timestep_hours=6) == 6


def test_regional_grid_is_not_global_training_data(tmp_path, canonical):
    regional = canonical.sel(latitude=slice(20, 70), longitude=slice(200, 300))
    path = write_zarr(regional, tmp_path / "europe.zarr")
    with pytest.raises(data.DataError, match=r"europe\.zarr: regional grid"):
        data.check_training_ready(data.open(path))
    assert data.check_training_ready(data.open(path), require_global=False) == 1


def test_real_era5_one_degree_surface_sample(era5_samples):
    """Real ERA5 (1 deg, short names, latitude 90 -> -90, non-CF integer hours since 1940,
    7-8 h steps). Contains modified Copernicus Climate Change Service information 2026."""
    path = era5_samples / "era5_global_1deg_7day_surface.zarr"
    ds = data.open(path)
    assert set(ds.data_vars) == {
        "2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind", "mean_sea_level_pressure",
    }
    assert ds.sizes == {"time": 12, "latitude": 181, "longitude": 360}
    assert ds["latitude"].values[0] == -90 and ds["latitude"].values[-1] == 90
    # 755880 hours after 1940-01-01 00 UTC is 2026-03-25 00 UTC
    assert ds["time"].values[0] == np.datetime64("2026-03-25T00")
    raw = xr.open_zarr(path, decode_times=False, consolidated=False)
    np.testing.assert_array_equal(ds["2m_temperature"].values[3], raw["t2m"].values[3, ::-1, :])
    t2m = ds["2m_temperature"].isel(time=0).values
    assert 200 < t2m.min() and t2m.max() < 330
    assert ds["mean_sea_level_pressure"].attrs["units"] == "Pa"
    with pytest.raises(data.DataError, match=r"era5_global_1deg_7day_surface\.zarr: irregular time step \(7 h .*8 h"):
        data.check_training_ready(ds)


def test_real_era5_tl31_netcdf(era5_samples):
    """Real ERA5 on a 64 x 32 Gaussian-like grid, dims (level, longitude, latitude).

    Contains modified Copernicus Climate Change Service information 2026."""
    path = era5_samples / "era5_tl31_19590102T00.nc"
    ds = data.open(path, variables=["z", "t", "u", "v"], levels=[250, 500, 850])
    assert ds["geopotential"].dims == ("time", "level", "latitude", "longitude")
    assert ds.sizes == {"time": 1, "level": 3, "latitude": 32, "longitude": 64}
    raw = xr.open_dataset(path)
    np.testing.assert_array_equal(
        ds["temperature"].sel(level=500).values[0], raw["temperature"].sel(level=500).values.T
    )
    z500 = ds["geopotential"].sel(level=500).values / 9.80665
    assert 4600 < z500.min() and z500.max() < 6000  # metres
    with pytest.raises(data.DataError, match="fewer than two times"):
        data.check_training_ready(ds)


def test_stored_chunk_runs_follow_the_canonical_reordering(tmp_path):
    """A native-ERA5 layout (latitude 90 -> -90, longitude -180..180, renamed dims) chunked (3 times,
    5 latitudes, 12 longitudes): after era5.open reverses the latitudes and rotates the longitudes,
    `stored_chunks.runs` gives the chunks in canonical order, worked out by hand from raw index // chunk."""
    raw = arco_layout(canonical_dataset(ntime=10, nlat=16, nlon=32))
    chunks = {"time": 3, "isobaricInhPa": 2, "lat": 5, "lon": 12}
    encoding = {v: {"chunks": tuple(chunks[d] for d in raw[v].dims)} for v in raw.data_vars}
    encoding["t2m"] = {"chunks": (10, 16, 32)}  # another variable of the store in one chunk
    raw.to_zarr(tmp_path / "arco.zarr", mode="w", consolidated=False, zarr_format=3, encoding=encoding)
    opened = data.open(tmp_path / "arco.zarr", with_stored_chunks=True)
    assert stored_chunks.runs(opened, "temperature", "time") == (3, 3, 3, 1)
    assert stored_chunks.runs(opened, "temperature", "level") == (2,)
    # raw rows 0-4, 5-9, 10-14, 15 reversed: canonical rows 0, 1-5, 6-10, 11-15
    assert stored_chunks.runs(opened, "temperature", "latitude") == (1, 5, 5, 5)
    # canonical longitude k (11.25 k deg) is raw column (k + 16) mod 32: chunk ids 1 x8, 2 x8, 0 x12, 1 x4
    assert stored_chunks.runs(opened, "temperature", "longitude") == (8, 8, 12, 4)
    assert stored_chunks.runs(opened, "2m_temperature", "time") == (10,)
    assert stored_chunks.runs(opened, "2m_temperature", "longitude") == (32,)  # one chunk, rotated or not
    assert stored_chunks.runs(data.open(tmp_path / "arco.zarr"), "temperature", "time") is None  # not by default
    selected = data.open(tmp_path / "arco.zarr", time=slice("2000-01-01T12", None), with_stored_chunks=True)
    assert stored_chunks.runs(selected, "geopotential", "time") == (1, 3, 3, 1)  # the selection starts in a chunk
    chunked = stored_chunks.chunk_like_store(selected, {"time": 1, "latitude": 4, "longitude": -1})
    assert chunked["temperature"].chunks[0] == (1, 3, 3, 1) and chunked["2m_temperature"].chunks[0] == (8,)
    assert chunked["temperature"].chunksizes["latitude"] == (1, 5, 5, 5)
    assert not [c for c in chunked.coords if str(c).startswith(stored_chunks.PREFIX)]
