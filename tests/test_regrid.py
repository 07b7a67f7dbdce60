"""Conservative regridding: area means are preserved, exact cell averages stay exact, dask stays lazy."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from weatherens import grid
from weatherens.data import regrid


def _field(values, lat, lon, **attrs):
    dims = ("time", "latitude", "longitude")[-values.ndim:]
    return xr.DataArray(values, dims=dims, coords={"latitude": lat, "longitude": lon}, attrs=attrs)


def _global_mean(da):
    """Area-weighted global mean per remaining dim, as WeatherBench 2 (weights of mean 1)."""
    w = xr.DataArray(grid.latitude_weights(da.latitude.values), dims="latitude")
    return (da * w).mean(("latitude", "longitude")).values


def _gaussian_latitudes(n):
    nodes, _ = np.polynomial.legendre.leggauss(n)  # ascending sin(latitude)
    return np.rad2deg(np.arcsin(nodes))


SOURCES = {
    "1deg_with_poles": (np.linspace(-90, 90, 181), grid.longitudes(360)),
    "gaussian_T42": (_gaussian_latitudes(64), grid.longitudes(128)),
    "0.25deg_with_poles": (np.linspace(-90, 90, 721), grid.longitudes(1440)),
}


@pytest.mark.parametrize("name", list(SOURCES))
def test_global_mean_is_preserved(name):
    lat, lon = SOURCES[name]
    ntime = 1 if lat.size > 500 else 3
    x = _field(np.random.default_rng(0).normal(size=(ntime, lat.size, lon.size)), lat, lon)
    y = regrid.to_equiangular(x)
    assert y.shape == (ntime, 32, 64)
    np.testing.assert_allclose(y.latitude, grid.equiangular_latitudes(32))
    np.testing.assert_allclose(y.longitude, grid.longitudes(64))
    np.testing.assert_allclose(_global_mean(y), _global_mean(x), rtol=0, atol=1e-12)


def _exact_cell_means(lat, lon):
    """Exact area averages over each cell of f = sin^2(phi) + cos(phi) cos(lambda).

    The area element cos(phi) dphi dlambda factorises, so per cell (edges a < b in latitude,
    c < d in longitude, radians):
      mean sin^2 = (sin^3 b - sin^3 a) / 3 / (sin b - sin a)
      mean cos   = ((b - a)/2 + (sin 2b - sin 2a)/4) / (sin b - sin a)      [int cos^2 / int cos]
      mean cos(lambda) = (sin d - sin c) / (d - c)
    The exact global mean of f is 1/3 (+ 0).
    """
    a, b = np.deg2rad(grid.latitude_bounds(lat)[:-1]), np.deg2rad(grid.latitude_bounds(lat)[1:])
    c, d = np.deg2rad(grid.longitude_bounds(lon)[:-1]), np.deg2rad(grid.longitude_bounds(lon)[1:])
    band = np.sin(b) - np.sin(a)
    mean_sin2 = (np.sin(b) ** 3 - np.sin(a) ** 3) / 3 / band
    mean_cos = ((b - a) / 2 + (np.sin(2 * b) - np.sin(2 * a)) / 4) / band
    mean_coslon = (np.sin(d) - np.sin(c)) / (d - c)
    return mean_sin2[:, None] + mean_cos[:, None] * mean_coslon[None, :]


def test_exact_cell_averages_stay_exact_on_nested_grids():
    # 320 x 320 cells nest exactly, 10 x 5, in the 32 x 64 cells (longitude cells are centred on
    # 0 deg, so only odd ratios nest), and conservative remapping of exact cell averages gives
    # the exact averages over the coarse cells.
    lat, lon = grid.equiangular_latitudes(320), grid.longitudes(320)
    y = regrid.to_equiangular(_field(_exact_cell_means(lat, lon), lat, lon))
    expected = _exact_cell_means(grid.equiangular_latitudes(32), grid.longitudes(64))
    np.testing.assert_allclose(y.values, expected, rtol=0, atol=1e-12)


def test_analytic_field_on_era5_grid():
    # 1 deg cells do not nest in 5.625 deg cells: the cell values are close to, not equal to, the
    # exact averages; the global mean, 1/3, is exact.
    lat, lon = SOURCES["1deg_with_poles"]
    y = regrid.to_equiangular(_field(_exact_cell_means(lat, lon), lat, lon))
    expected = _exact_cell_means(grid.equiangular_latitudes(32), grid.longitudes(64))
    np.testing.assert_allclose(y.values, expected, rtol=0, atol=2e-3)
    np.testing.assert_allclose(_global_mean(y), 1 / 3, rtol=0, atol=1e-12)


def test_constant_stays_constant_and_dtype_kept():
    lat, lon = SOURCES["1deg_with_poles"]
    x = _field(np.full((2, lat.size, lon.size), 273.15, np.float32), lat, lon, units="K")
    y = regrid.to_equiangular(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.values, 273.15, rtol=1e-7)
    assert y.attrs["units"] == "K" and "Jones 1999" in y.attrs["regrid"]


def test_zonal_means_preserved_when_latitudes_match():
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(640)
    rng = np.random.default_rng(1)
    x = _field(rng.normal(size=(2, 32, 640)), lat, lon)
    y = regrid.conservative(x, lat, grid.longitudes(64))
    np.testing.assert_allclose(y.mean("longitude"), x.mean("longitude"), rtol=0, atol=1e-12)
    zonally_symmetric = _field(np.repeat(rng.normal(size=(32, 1)), 640, axis=1), lat, lon)
    y = regrid.conservative(zonally_symmetric, lat, grid.longitudes(64))
    np.testing.assert_allclose(y.values, zonally_symmetric.values[:, :64], rtol=0, atol=1e-12)


def test_weights_rows_sum_to_one_and_wrap():
    w = regrid.conservative_weights(grid.longitudes(360), grid.longitudes(64), "longitude")
    np.testing.assert_allclose(w.sum(axis=1), 1, atol=1e-14)
    # the first target cell [-2.8125, 2.8125] takes source cells 357..359 (wrapped) and 0..3
    assert set(np.flatnonzero(w[0])) == {357, 358, 359, 0, 1, 2, 3}
    np.testing.assert_allclose(w[0, 359], 1 / 5.625)  # 359 deg cell is [358.5, 359.5]: all inside
    np.testing.assert_allclose(w[0, 357], (357.5 - 357.1875) / 5.625)  # [356.5, 357.5]: a sliver
    np.testing.assert_allclose(w[0, 4], 0)
    lat_w = regrid.conservative_weights(np.linspace(-90, 90, 181), grid.equiangular_latitudes(32), "latitude")
    np.testing.assert_allclose(lat_w.sum(axis=1), 1, atol=1e-14)


def test_matches_dinosaur_weights():
    hi = pytest.importorskip("dinosaur.horizontal_interpolation")
    src_lat, dst_lat = np.linspace(-90, 90, 181), grid.equiangular_latitudes(32)
    src_lon, dst_lon = grid.longitudes(360), grid.longitudes(64)
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):  # dinosaur computes in jax's default dtype
        ref_lat = np.asarray(hi.conservative_latitude_weights(np.deg2rad(src_lat), np.deg2rad(dst_lat)))
        ref_lon = np.asarray(hi.conservative_longitude_weights(np.deg2rad(src_lon), np.deg2rad(dst_lon)))
    np.testing.assert_allclose(regrid.conservative_latitude_weights(src_lat, dst_lat), ref_lat, atol=1e-12)
    np.testing.assert_allclose(regrid.conservative_longitude_weights(src_lon, dst_lon), ref_lon, atol=1e-12)


def _forbid_compute(dsk, keys, **kwargs):
    raise AssertionError("regridding a dask-backed dataset computed something")


def test_dask_input_is_lazy_and_equal():
    lat, lon = SOURCES["1deg_with_poles"]
    rng = np.random.default_rng(2)
    ds = xr.Dataset(
        {
            "temperature": (
                ("time", "level", "latitude", "longitude"), rng.normal(size=(4, 2, 181, 360)), {"units": "K"}
            ),
            "surface_pressure": (("time", "latitude", "longitude"), rng.normal(size=(4, 181, 360))),
            "time_only": (("time",), np.arange(4.0)),
        },
        coords={"time": np.arange(4), "level": [500, 850], "latitude": lat, "longitude": lon},
        attrs={"source": "test"},
    )
    eager = regrid.to_equiangular(ds)
    lazy_in = ds.chunk({"time": 1, "latitude": 60})  # split latitude: must be rechunked, not rejected
    with dask.config.set(scheduler=_forbid_compute):
        lazy = regrid.to_equiangular(lazy_in)
    assert lazy.temperature.chunks is not None
    assert lazy.temperature.dims == ("time", "level", "latitude", "longitude")
    assert lazy.temperature.attrs["units"] == "K" and lazy.attrs["source"] == "test"
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=0, atol=1e-14)
    xr.testing.assert_identical(eager.time_only, ds.time_only)


def test_nan_handling():
    # 64 x 192 -> 32 x 64: target cell (i, k) is exactly source rows 2i, 2i+1 x columns 3k-1..3k+1
    lat, lon = grid.equiangular_latitudes(64), grid.longitudes(192)
    values = np.ones((64, 192))
    values[10, 20] = np.nan  # inside target cell (5, 7)
    values[0:2, [191, 0, 1]] = np.nan  # the whole target cell (0, 0)
    x = _field(values, lat, lon)
    strict = regrid.conservative(x, grid.equiangular_latitudes(32), grid.longitudes(64))
    assert np.isnan(strict.values[5, 7]) and np.isnan(strict.values[0, 0])
    assert np.isfinite(strict.values).sum() == 32 * 64 - 2
    np.testing.assert_allclose(np.nan_to_num(strict.values, nan=1.0), 1.0, rtol=1e-14)
    lenient = regrid.conservative(x, grid.equiangular_latitudes(32), grid.longitudes(64), skipna=True)
    assert np.isnan(lenient.values[0, 0]) and np.isfinite(lenient.values).sum() == 32 * 64 - 1
    np.testing.assert_allclose(np.nan_to_num(lenient.values, nan=1.0), 1.0, rtol=1e-14)


def test_errors():
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(64)
    x = _field(np.zeros((32, 64)), lat, lon)
    with pytest.raises(ValueError, match="finer than the source"):
        regrid.conservative(x, grid.equiangular_latitudes(64), lon)
    with pytest.raises(ValueError, match="finer than the source"):
        regrid.conservative(x, lat, grid.longitudes(128))
    with pytest.raises(ValueError, match="ascending"):
        regrid.to_equiangular(x.isel(latitude=slice(None, None, -1)), 16, 32)
    with pytest.raises(ValueError, match="no 'longitude'"):
        regrid.to_equiangular(x.rename(longitude="lon"), 16, 32)
    with pytest.raises(ValueError, match="regular and global"):
        regrid.to_equiangular(x.isel(longitude=slice(0, 40)), 16, 32)
