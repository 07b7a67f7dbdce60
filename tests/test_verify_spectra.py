"""Zonal energy spectra (WeatherBench 2 convention) and spherical-harmonic power spectra."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from weatherens import grid
from weatherens.sphere import legendre as sph
from weatherens.verify import spectra

R = spectra.EARTH_RADIUS_M


def field(values: np.ndarray, lat: np.ndarray, units: str = "K", name: str = "temperature", **leading) -> xr.DataArray:
    """A DataArray (*leading, latitude, longitude) on a regular grid starting at longitude 0."""
    nlon = values.shape[-1]
    coords = {**{k: np.arange(n) for k, n in leading.items()}, "latitude": lat, "longitude": grid.longitudes(nlon)}
    return xr.DataArray(values, dims=(*leading, "latitude", "longitude"), coords=coords, name=name, attrs={"units": units})


def lon_rad(nlon: int) -> np.ndarray:
    return np.deg2rad(grid.longitudes(nlon))


# ---- zonal energy spectrum ----------------------------------------------------------------


@pytest.mark.parametrize("nlon", [64, 45])  # even (with a Nyquist wave) and odd
def test_zonal_spectrum_parseval_is_exact(nlon):
    """sum_k S(k) / (2 pi R cos lat) = mean over longitude of f^2, at every latitude."""
    lat = grid.equiangular_latitudes(32)
    values = np.random.default_rng(0).standard_normal((2, 3, 32, nlon)) + 5.0
    spec = spectra.zonal_energy_spectrum(field(values, lat, time=2, level=3))
    assert spec.dims == ("time", "level", "latitude", "zonal_wavenumber")
    assert spec.sizes["zonal_wavenumber"] == nlon // 2 + 1
    circumference = 2 * np.pi * R * np.cos(np.deg2rad(lat))
    np.testing.assert_allclose(spec.sum("zonal_wavenumber").values / circumference, (values**2).mean(-1), rtol=1e-13)


def test_zonal_spectrum_of_a_cosine_is_a_spike():
    """f = 3 + cos(5 lon): S(0) = C 3^2, S(5) = 2 C |1/2|^2 = C / 2, nothing else."""
    lat = grid.equiangular_latitudes(32)
    values = np.broadcast_to(3.0 + np.cos(5 * lon_rad(64)), (32, 64))
    spec = spectra.zonal_energy_spectrum(field(values, lat)).values
    circumference = 2 * np.pi * R * np.cos(np.deg2rad(lat))
    np.testing.assert_allclose(spec[:, 0], 9 * circumference, rtol=1e-13)
    np.testing.assert_allclose(spec[:, 5], circumference / 2, rtol=1e-12)
    others = np.delete(spec, [0, 5], axis=1)
    assert np.all(others < 1e-12 * spec[:, [5]])


def test_nyquist_wave_counted_once_unlike_wb2():
    """f = cos(32 lon) on 64 longitudes is (-1)^j: mean f^2 = 1, all of it at k = 32. WB2 counts it twice."""
    lat = np.array([0.0])
    values = np.cos(32 * lon_rad(64))[None, :]
    ours = spectra.zonal_energy_spectrum(field(values, lat))
    wb2 = spectra.zonal_energy_spectrum(field(values, lat), wb2_nyquist=True)
    assert ours.isel(zonal_wavenumber=-1).item() == pytest.approx(2 * np.pi * R * 1.0, rel=1e-13)
    assert wb2.isel(zonal_wavenumber=-1).item() == pytest.approx(2 * np.pi * R * 2.0, rel=1e-13)
    xr.testing.assert_identical(ours.isel(zonal_wavenumber=slice(0, -1)), wb2.isel(zonal_wavenumber=slice(0, -1)))


def test_zonal_spectrum_pole_rows_and_coordinates():
    lat = grid.equiangular_latitudes(121, with_poles=True)
    values = np.random.default_rng(1).standard_normal((121, 240))
    spec = spectra.zonal_energy_spectrum(field(values, lat, units="m s**-1", name="u"))
    assert np.isfinite(spec.values).all()
    np.testing.assert_array_equal(spec.sel(latitude=[-90.0, 90.0]).values, 0.0)  # zero circumference
    assert spec.attrs["units"] == "(m s**-1)**2 m"
    wavelength = spec["zonal_wavelength"]
    assert wavelength.attrs["units"] == "km"
    assert np.isinf(wavelength.sel(zonal_wavenumber=0)).all()
    assert wavelength.sel(latitude=0.0, zonal_wavenumber=4).item() == pytest.approx(2 * np.pi * R / 1000 / 4)


def test_zonal_spectrum_rejects_a_regional_grid():
    da = field(np.ones((4, 10)), np.arange(4.0)).assign_coords(longitude=np.arange(10.0))
    with pytest.raises(ValueError, match="whole circle"):
        spectra.zonal_energy_spectrum(da)


def test_band_average_parseval_and_coordinates():
    """A band's sum over k is the area-weighted band mean of C(lat) * mean_lon(f^2)."""
    lat = grid.equiangular_latitudes(181, with_poles=True)
    values = np.random.default_rng(2).standard_normal((2, 181, 360))
    da = field(values, lat, time=2)
    bands = spectra.zonal_spectrum_by_band(da)
    assert bands.dims == ("time", "band", "zonal_wavenumber")
    assert list(bands["band"].values) == ["30N-60N", "30S-60S", "20S-20N"]
    assert bands.attrs["units"] == "K**2 m"
    weights = grid.latitude_weights(lat)
    line_integral = 2 * np.pi * R * np.cos(np.deg2rad(lat)) * (values**2).mean(-1)  # (time, lat)
    for name, (lo, hi) in spectra.DEFAULT_BANDS.items():
        inside = (lat >= lo) & (lat <= hi)
        expected = (line_integral[:, inside] * weights[inside]).sum(-1) / weights[inside].sum()
        np.testing.assert_allclose(bands.sel(band=name).sum("zonal_wavenumber").values, expected, rtol=1e-12)
    nominal = 2 * np.pi * R / 1000 * np.average(np.cos(np.deg2rad(lat[(lat >= 30) & (lat <= 60)])),
                                                 weights=weights[(lat >= 30) & (lat <= 60)])
    assert bands["zonal_wavelength"].sel(band="30N-60N", zonal_wavenumber=1).item() == pytest.approx(nominal)
    with pytest.raises(ValueError, match="holds no latitude"):
        spectra.zonal_spectrum_by_band(da, bands={"gap": (0.2, 0.7)})
    holes = values.copy()
    holes[0, (lat >= 40) & (lat <= 45)] = np.nan  # missing rows leave the band mean of the rest
    holes[1, (lat >= -20) & (lat <= 20)] = np.nan  # a band with no valid row is NaN
    with_holes = spectra.zonal_spectrum_by_band(field(holes, lat, time=2)).sum("zonal_wavenumber", skipna=False)
    kept = (lat >= 30) & (lat <= 60) & ~((lat >= 40) & (lat <= 45))
    expected = (line_integral[0, kept] * weights[kept]).sum() / weights[kept].sum()
    assert with_holes.sel(band="30N-60N").values[0] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(with_holes.sel(band="20S-20N").values[1])
    assert with_holes.sel(band="30S-60S").values[1] == pytest.approx(bands.sel(band="30S-60S").sum("zonal_wavenumber").values[1])


def test_spectra_work_on_dask_arrays():
    lat = grid.equiangular_latitudes(32)
    da = field(np.random.default_rng(3).standard_normal((4, 32, 64)), lat, time=4)
    lazy = da.chunk({"time": 1})
    xr.testing.assert_allclose(spectra.zonal_spectrum_by_band(lazy).compute(), spectra.zonal_spectrum_by_band(da))
    rows = da.chunk({"latitude": 8})  # e.g. an ERA5 store chunked by latitude
    xr.testing.assert_allclose(spectra.zonal_spectrum_by_band(rows).compute(), spectra.zonal_spectrum_by_band(da))
    xr.testing.assert_allclose(spectra.sh_power_spectrum(lazy).compute(), spectra.sh_power_spectrum(da))


# ---- spherical-harmonic power spectrum ----------------------------------------------------


SH_GRIDS = {
    "equiangular 64x32": (grid.equiangular_latitudes(32), 64),
    "1.5 deg with poles 240x121": (grid.equiangular_latitudes(121, with_poles=True), 240),
    "gaussian 64x32": (sph.gaussian_latitudes(32)[0], 64),
}


@pytest.mark.parametrize("name", list(SH_GRIDS))
@pytest.mark.parametrize("m", [0, 3])
def test_sh_spectrum_of_one_harmonic_is_a_spike(name, m):
    """f = P_5m(sin lat) cos(m lon): a_5m = 1/2 for m > 0 (1 for m = 0), so P(5) = mean f^2 = 1/2 (1)."""
    lat, nlon = SH_GRIDS[name]
    p5m = sph.legendre_functions(lat, 5)[m, 5]
    values = p5m[:, None] * np.cos(m * lon_rad(nlon))[None, :]
    spec = spectra.sh_power_spectrum(field(values, lat))
    peak = spec.sel(total_wavenumber=5).item()
    assert peak == pytest.approx(1.0 if m == 0 else 0.5, rel=1e-12)
    assert np.all(spec.drop_sel(total_wavenumber=5).values < 1e-10 * peak)


@pytest.mark.parametrize("name", list(SH_GRIDS))
def test_sh_spectrum_parseval(name):
    """sum_l P(l) = (1/4 pi) integral f^2 for a band-limited field, the integral taken exactly by Gauss
    quadrature of the same field on a Gaussian grid (the grid's own cell-area mean is only a quadrature)."""
    lat, nlon = SH_GRIDS[name]
    lmax = sph.max_degree(lat, nlon) // 2
    rng = np.random.default_rng(4)
    coeffs = np.tril(rng.standard_normal((lmax + 1, lmax + 1)) + 1j * rng.standard_normal((lmax + 1, lmax + 1)))
    coeffs[:, 0] = coeffs[:, 0].real
    gauss_lat, gauss_w = sph.gaussian_latitudes(lmax + 1)
    exact = np.sum(gauss_w * (sph.sh_synthesis(coeffs, gauss_lat, 2 * lmax + 2) ** 2).mean(-1))
    spec = spectra.sh_power_spectrum(field(sph.sh_synthesis(coeffs, lat, nlon), lat), lmax)
    assert spec.sum().item() == pytest.approx(exact, rel=1e-12)
    np.testing.assert_allclose(spec.values, sph.power_per_degree(coeffs), rtol=1e-10)


def test_sh_spectrum_dims_units_and_wavelength():
    lat = grid.equiangular_latitudes(32)
    da = field(np.random.default_rng(5).standard_normal((2, 3, 32, 64)), lat, "m**2 s**-2", "geopotential",
               time=2, number=3)
    spec = spectra.sh_power_spectrum(da)
    assert spec.dims == ("time", "number", "total_wavenumber") and spec.sizes["total_wavenumber"] == 32
    assert spec.name == "geopotential" and spec.attrs["units"] == "(m**2 s**-2)**2"
    assert np.isinf(spec["wavelength"].values[0])
    assert spec["wavelength"].sel(total_wavenumber=10).item() == pytest.approx(2 * np.pi * R / 1000 / 10)
    with pytest.raises(ValueError, match="global grid"):
        spectra.sh_power_spectrum(da.isel(latitude=slice(0, 16)))


# ---- real ERA5 samples --------------------------------------------------------------------


def test_real_era5_one_degree_t2m_spectra(era5_samples):
    """1 deg ERA5 2 m temperature (181 x 360 with pole rows) through both spectra: finite, pole rows zero,
    power falling with wavenumber. Contains modified Copernicus Climate Change Service information 2026."""
    from weatherens.data import era5

    t2m = era5.open(era5_samples / "era5_global_1deg_7day_surface.zarr", ["t2m"])["2m_temperature"]
    t2m = t2m.isel(time=slice(0, 4)).load()

    zonal = spectra.zonal_energy_spectrum(t2m)
    assert np.isfinite(zonal.values).all() and (zonal.values >= 0).all()
    np.testing.assert_array_equal(zonal.sel(latitude=[-90.0, 90.0]).values, 0.0)
    bands = spectra.zonal_spectrum_by_band(t2m).mean("time")
    assert np.isfinite(bands.values).all() and bands.attrs["units"] == "K**2 m"
    large, small = bands.sel(zonal_wavenumber=slice(1, 5)).mean(), bands.sel(zonal_wavenumber=slice(50, 100)).mean()
    assert (small < 1e-2 * large).all()

    sh = spectra.sh_power_spectrum(t2m)
    assert sh.sizes["total_wavenumber"] == 180 and np.isfinite(sh.values).all()
    weights = xr.DataArray(grid.latitude_weights(t2m.latitude.values), dims="latitude")
    area_mean = (t2m.astype(np.float64) ** 2).weighted(weights).mean(["latitude", "longitude"])
    np.testing.assert_allclose(sh.sum("total_wavenumber"), area_mean, rtol=1e-5)
    assert sh.sel(total_wavenumber=0).item(0) == pytest.approx(t2m.isel(time=0).weighted(weights).mean().item() ** 2,
                                                              rel=1e-4)
    assert (sh.sel(total_wavenumber=slice(100, None)).max("total_wavenumber")
            < 1e-3 * sh.sel(total_wavenumber=slice(1, 10)).max("total_wavenumber")).all()


def test_real_era5_tl31_z500_sh_spectrum(era5_samples):
    """TL31 ERA5 geopotential at 500 hPa (64 x 32 Gaussian latitudes): the SH spectrum falls steeply from
    the planetary scales to l = 31. Contains modified Copernicus Climate Change Service information 2026."""
    from weatherens.data import era5

    z500 = era5.open(era5_samples / "era5_tl31_19590102T00.nc", ["z"], levels=[500])["geopotential"].load()
    np.testing.assert_allclose(z500.latitude, sph.gaussian_latitudes(32)[0], atol=1e-9)
    spec = spectra.sh_power_spectrum(z500).squeeze()
    assert spec.sizes["total_wavenumber"] == 32 and spec.attrs["units"] == "(m**2 s**-2)**2"
    power = spec.values
    assert power[2:7].min() > 100 * power[28:].max()
    assert power[21:].sum() < 1e-2 * power[1:11].sum()
    zonal = spectra.zonal_spectrum_by_band(z500)
    assert np.isfinite(zonal.values).all()
