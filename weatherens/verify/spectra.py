"""Zonal energy spectra (WeatherBench 2 convention) and spherical-harmonic power spectra.

Both take an xarray.DataArray with dims `latitude` and `longitude` (degrees; longitudes equally
spaced round the whole circle) and any leading dims (time, number, level, ...), and work on numpy-
or dask-backed data (one chunk along latitude and longitude). Units: a field in `u` gives a zonal
spectrum in `u**2 m` and a spherical-harmonic spectrum in `u**2`.

Earth radius: `EARTH_RADIUS_M` = 6,367,500 m, WeatherBench 2's `schema.EARTH_RADIUS_M` (mean of
the equatorial and polar radii, 1000 (6357 + 6378) / 2), so that zonal spectra equal WB2's.
(dinosaur uses 6,371,220 m; the difference is 0.06 %.) Every function takes `radius=`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from weatherens import grid
from weatherens.sphere import legendre

EARTH_RADIUS_M = grid.EARTH_RADIUS_M

# Latitude bands (degrees, inclusive) for `zonal_spectrum_by_band`: the two mid-latitude bands
# where WB2 and most model papers show zonal spectra (30-60 deg; away from the poles, where
# zonal wavenumbers map to ever shorter wavelengths), and the deep tropics.
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "30N-60N": (30.0, 60.0),
    "30S-60S": (-60.0, -30.0),
    "20S-20N": (-20.0, 20.0),
}

LAT, LON = "latitude", "longitude"


def squared_units(units: str) -> str:
    """'K' -> 'K**2', 'm s**-1' -> '(m s**-1)**2' (the units of a power spectrum's values)."""
    units = units.strip()
    if not units:
        return ""
    return f"{units}**2" if all(c.isalnum() or c == "_" for c in units) else f"({units})**2"


def _check_horizontal(da: xr.DataArray) -> None:
    missing = [d for d in (LAT, LON) if d not in da.dims]
    if missing:
        raise ValueError(f"{da.name or 'field'}: needs dims {LAT} and {LON}; missing {missing} (has {da.dims})")
    lon = np.asarray(da[LON].values, dtype=np.float64)
    step = 360.0 / lon.size
    if lon.size < 2 or not np.allclose(np.diff(lon), step, rtol=0, atol=1e-6 * step + 1e-6):
        raise ValueError(
            f"{da.name or 'field'}: longitudes must be equally spaced round the whole circle "
            f"({lon.size} values from {lon.min():g} to {lon.max():g})"
        )


def _circumference_m(lat_deg: np.ndarray, radius: float) -> np.ndarray:
    """2 pi R cos(lat), exactly 0 on the pole rows (so they carry no energy, not NaN or 1e-17)."""
    lat_deg = np.asarray(lat_deg, dtype=np.float64)
    cos = np.where(np.isclose(np.abs(lat_deg), 90.0, rtol=0, atol=1e-9), 0.0, np.cos(np.deg2rad(lat_deg)))
    return 2.0 * np.pi * radius * cos


def _wavelength_km(circumference_m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """circumference / k in km; inf at k = 0 (the mean has no finite wavelength)."""
    c, k = np.broadcast_arrays(np.asarray(circumference_m, float) / 1000.0, np.asarray(k, float))
    return np.divide(c, k, out=np.full(c.shape, np.inf), where=k > 0)


def zonal_energy_spectrum(da: xr.DataArray, *, radius: float = EARTH_RADIUS_M, wb2_nyquist: bool = False) -> xr.DataArray:
    """Energy per zonal wavenumber on each latitude circle (WeatherBench 2 `ZonalEnergySpectrum`).

    With f_j, j = 0..n-1, the values round the circle at latitude phi, circumference
    C(phi) = 2 pi R cos(phi), and F_k = (1/n) sum_j f_j exp(-2 pi i k j / n) (numpy rfft,
    norm="forward"), for k = 0 .. n // 2::

        S(k) = c_k C(phi) |F_k|^2,   c_0 = 1,  c_k = 2 for 0 < k < n/2,  c_{n/2} = 1 (n even).

    Parseval then holds exactly: sum_k S(k) / C(phi) = (1/n) sum_j f_j^2, i.e. sum_k S(k) is the
    discrete integral of f^2 along the circle (units of f squared times metres).

    WB2 counts every k > 0 twice, including the Nyquist wave k = n/2 of an even n, so its sum
    exceeds the integral by C |F_{n/2}|^2 (its own test allows rtol 2e-3). `wb2_nyquist=True`
    reproduces that bit for bit; otherwise the two agree at every k < n/2.

    Pole rows (|lat| = 90) have C = 0 and get S = 0 at every k: a point has no zonal spectrum.

    Returns:
      DataArray with `longitude` replaced by `zonal_wavenumber` (k = 0 .. n//2, last dim), the
      coordinate `zonal_wavelength` (latitude, zonal_wavenumber) = C / k in km (inf at k = 0,
      0 on pole rows), and `units` = units of f squared times m.
    """
    _check_horizontal(da)
    n = da.sizes[LON]
    nk = n // 2 + 1
    factor = np.full(nk, 2.0)
    factor[0] = 1.0
    if n % 2 == 0 and not wb2_nyquist:
        factor[-1] = 1.0

    def power(x: np.ndarray) -> np.ndarray:
        fk = np.fft.rfft(np.asarray(x, dtype=np.float64), axis=-1, norm="forward")
        return (fk.real**2 + fk.imag**2) * factor

    spec = xr.apply_ufunc(
        power,
        da,
        input_core_dims=[[LON]],
        output_core_dims=[["zonal_wavenumber"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"zonal_wavenumber": nk}},
    )
    circ = xr.DataArray(_circumference_m(da[LAT].values, radius), dims=[LAT], coords={LAT: da[LAT]})
    spec = spec * circ
    k = np.arange(nk)
    spec = spec.assign_coords(
        zonal_wavenumber=("zonal_wavenumber", k),
        zonal_wavelength=(
            (LAT, "zonal_wavenumber"),
            _wavelength_km(circ.values[:, None], k[None, :]),
            {"units": "km", "long_name": "zonal wavelength, 2 pi R cos(lat) / k"},
        ),
    )
    units = squared_units(str(da.attrs.get("units", "")))
    spec.name = da.name
    spec.attrs = {
        "units": f"{units} m" if units else "m",
        "long_name": f"zonal energy spectrum of {da.name or 'field'}",
        "earth_radius_m": radius,
    }
    return spec


def zonal_spectrum_by_band(
    da: xr.DataArray,
    bands: Mapping[str, tuple[float, float]] | None = None,
    *,
    radius: float = EARTH_RADIUS_M,
) -> xr.DataArray:
    """Zonal energy spectra averaged over latitude bands with area weights.

    For each band [lo, hi] (degrees, inclusive), the mean over the latitude rows in it of
    `zonal_energy_spectrum`, weighted by the rows' cell areas (`grid.latitude_weights`), at each
    zonal wavenumber k. So sum_k of a band's spectrum is the area-weighted band mean of
    C(phi) * mean_lon(f^2).

    The average is taken at fixed wavenumber, not at fixed wavelength as WB2's
    `interpolate_spectral_frequencies` does before averaging; for 30-degree bands the wavelength of
    a given k varies by a factor cos(30)/cos(60) = 1.7 across the band. The coordinate
    `zonal_wavelength` (band, zonal_wavenumber) is the nominal one, 2 pi R <cos phi> / k in km, with
    <cos phi> the band's area-weighted mean.

    Args:
      da: a field with dims latitude and longitude (as `zonal_energy_spectrum`).
      bands: name -> (lat_min, lat_max); default `DEFAULT_BANDS` (30N-60N, 30S-60S, 20S-20N).

    Returns:
      DataArray (..., band, zonal_wavenumber) with coordinates band, band_lat_min, band_lat_max,
      zonal_wavelength; units as `zonal_energy_spectrum`.

    Raises:
      ValueError if a band holds no latitude of the grid.
    """
    bands = DEFAULT_BANDS if bands is None else dict(bands)
    spec = zonal_energy_spectrum(da, radius=radius)
    lat = np.asarray(da[LAT].values, dtype=np.float64)
    weights = grid.latitude_weights(lat)
    circ = _circumference_m(lat, radius)
    band_weights = []
    for name, (lo, hi) in bands.items():
        lo, hi = min(lo, hi), max(lo, hi)
        inside = (lat >= lo - 1e-9) & (lat <= hi + 1e-9)
        if not inside.any():
            raise ValueError(f"band {name} ({lo:g} to {hi:g} degrees) holds no latitude of the grid "
                             f"({lat.size} latitudes from {lat.min():g} to {lat.max():g})")
        band_weights.append(np.where(inside, weights, 0.0))
    w = np.stack(band_weights)  # (band, latitude)
    mean_circ = w @ circ / w.sum(axis=1)

    def band_means(x: np.ndarray) -> np.ndarray:  # (..., latitude, k) -> (..., band, k); NaN rows skipped
        ok = ~np.isnan(x)
        total = np.einsum("bl,...lk->...bk", w, np.where(ok, x, 0.0))
        weight = np.einsum("bl,...lk->...bk", w, ok.astype(np.float64))
        return np.divide(total, weight, out=np.full(total.shape, np.nan), where=weight > 0)

    out = xr.apply_ufunc(
        band_means,
        spec.drop_vars("zonal_wavelength"),
        input_core_dims=[[LAT, "zonal_wavenumber"]],
        output_core_dims=[["band", "zonal_wavenumber"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"band": len(bands)}, "allow_rechunk": True},  # latitude chunks joined
    )
    k = out["zonal_wavenumber"].values
    out = out.assign_coords(
        band=("band", list(bands)),
        band_lat_min=("band", [min(b) for b in bands.values()]),
        band_lat_max=("band", [max(b) for b in bands.values()]),
        zonal_wavelength=(
            ("band", "zonal_wavenumber"),
            _wavelength_km(np.asarray(mean_circ)[:, None], k[None, :]),
            {"units": "km", "long_name": "nominal zonal wavelength, 2 pi R <cos lat> / k"},
        ),
    )
    out = out.transpose(..., "band", "zonal_wavenumber")
    out.name = da.name
    out.attrs = {**spec.attrs, "long_name": f"band-mean zonal energy spectrum of {da.name or 'field'}"}
    return out


def sh_power_spectrum(
    da: xr.DataArray, lmax: int | None = None, *, radius: float = EARTH_RADIUS_M
) -> xr.DataArray:
    """Power per total wavenumber l of a real field on the sphere (Parseval-normalised).

    With a_lm the coefficients of f in 4 pi-normalised spherical harmonics
    (`weatherens.sphere.legendre`: (1/4 pi) integral |Y_lm|^2 dOmega = 1), obtained by the
    area-weighted least-squares analysis up to degree L::

        P(l) = sum_{m=-l..l} |a_lm|^2 = |a_l0|^2 + 2 sum_{m=1..l} |a_lm|^2,

    so sum_l P(l) = (1/4 pi) integral f^2 dOmega, the area mean of f^2 over the sphere: exactly
    for a field band-limited to L (which the analysis recovers exactly); for real data the
    part of f beyond degree L (the least-squares residual) is left out. P(0) is the squared
    global mean. Units: units of f squared.

    Args:
      da: a global field with dims latitude and longitude (any latitudes: equiangular with or
        without poles, Gaussian; longitudes equally spaced over 360).
      lmax: largest degree; default `legendre.max_degree` (nlat - 1 without pole rows, nlat - 2
        with both, and at most (nlon - 1) // 2): 31 on 64 x 32, 119 on 240 x 121, 179 on 1 deg.
        The cached float64 tables take 8 (lmax + 1)^2 nlat bytes: 47 MB at 1 deg, 3 GB at 0.25 deg.

    Returns:
      DataArray with latitude and longitude replaced by `total_wavenumber` (l = 0..L, last dim)
      and the coordinate `wavelength` = 2 pi R / l in km (inf at l = 0; the Jeans wavelength
      2 pi R / sqrt(l (l + 1)) differs by under 1 % for l > 50).
    """
    _check_horizontal(da)
    lat = np.asarray(da[LAT].values, dtype=np.float64)
    lon = np.asarray(da[LON].values, dtype=np.float64)
    if not grid.is_global(lat, lon):
        raise ValueError(f"{da.name or 'field'}: the spherical-harmonic spectrum needs a global grid "
                         f"(latitudes {lat.min():g}..{lat.max():g})")
    lmax = legendre.max_degree(lat, lon.size) if lmax is None else int(lmax)
    legendre.analysis_matrices(lat, lon.size, lmax)  # fail early (and fill the cache) on a bad lmax

    def power(x: np.ndarray) -> np.ndarray:
        return legendre.power_per_degree(legendre.sh_analysis(x, lat, lmax))

    spec = xr.apply_ufunc(
        power,
        da,
        input_core_dims=[[LAT, LON]],
        output_core_dims=[["total_wavenumber"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"total_wavenumber": lmax + 1}},
    )
    l = np.arange(lmax + 1)
    spec = spec.assign_coords(
        total_wavenumber=("total_wavenumber", l),
        wavelength=(
            "total_wavenumber",
            _wavelength_km(np.full(l.shape, 2.0 * np.pi * radius), l),
            {"units": "km", "long_name": "wavelength, 2 pi R / l"},
        ),
    )
    spec.name = da.name
    spec.attrs = {
        "units": squared_units(str(da.attrs.get("units", ""))),
        "long_name": f"spherical-harmonic power spectrum of {da.name or 'field'}",
        "earth_radius_m": radius,
    }
    return spec
