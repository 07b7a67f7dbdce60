"""Regular latitude/longitude grids and their area weights (numpy only).

Conventions (WeatherBench 2, `weatherbench2/metrics.py` and `regridding.py`):
latitude ascending in degrees north, longitude 0 -> 360 degrees east; a cell's
latitude bounds are the midpoints between neighbouring latitudes, closed by -90 and +90.
"""

from __future__ import annotations

import numpy as np

# WeatherBench 2's `schema.EARTH_RADIUS_M`: the mean of the polar (6,357 km) and equatorial (6,378 km)
# radii. The project's one Earth radius (spectra, wavelengths); dinosaur's model keeps its own (6,371 km).
EARTH_RADIUS_M = 1000.0 * (6357.0 + 6378.0) / 2.0


def equiangular_latitudes(nlat: int, with_poles: bool = False) -> np.ndarray:
    """Latitudes of an equiangular grid, ascending, degrees north, shape (nlat,).

    Without poles (WeatherBench 2 64 x 32): cell centres -90 + (i + 1/2) * 180/nlat.
    With poles (ERA5 0.25 deg, WB2 1.5 deg 240 x 121): -90 + i * 180/(nlat - 1).
    """
    if with_poles:
        return np.linspace(-90.0, 90.0, nlat)
    step = 180.0 / nlat
    return -90.0 + step * (np.arange(nlat) + 0.5)


def longitudes(nlon: int) -> np.ndarray:
    """Longitudes of a regular grid starting at 0, degrees east, shape (nlon,)."""
    return np.arange(nlon) * (360.0 / nlon)


def latitude_bounds(lat: np.ndarray) -> np.ndarray:
    """Cell edges for ascending cell-centre latitudes, degrees, shape (nlat + 1,).

    Interior edges are midpoints; the outer edges are -90 and +90, so the cells tile the sphere.
    """
    lat = np.asarray(lat, dtype=np.float64)
    mids = 0.5 * (lat[1:] + lat[:-1])
    return np.concatenate([[-90.0], mids, [90.0]])


def longitude_bounds(lon: np.ndarray) -> np.ndarray:
    """Cell edges for a regular longitude axis, degrees, shape (nlon + 1,), periodic."""
    lon = np.asarray(lon, dtype=np.float64)
    step = 360.0 / lon.size
    return np.concatenate([lon - step / 2, [lon[-1] + step / 2]])


def cell_area_fractions(lat: np.ndarray) -> np.ndarray:
    """Fraction of the sphere's area in each latitude band, shape (nlat,), sums to 1.

    Area of the band between phi_a and phi_b is 2 pi r^2 (sin phi_b - sin phi_a). Latitudes in any
    order (ascending, descending as ERA5 files store them, Gaussian): the bands are those of the
    sorted latitudes, returned in the given order.
    """
    lat = np.asarray(lat, dtype=np.float64)
    order = np.argsort(lat)
    out = np.empty_like(lat)
    out[order] = 0.5 * np.diff(np.sin(np.deg2rad(latitude_bounds(lat[order]))))
    return out


def latitude_weights(lat: np.ndarray) -> np.ndarray:
    """Area weights w_i proportional to sin(phi_{i+1/2}) - sin(phi_{i-1/2}), mean 1, shape (nlat,).

    Same as WeatherBench 2 `get_lat_weights` (cell areas, normalised to mean 1); latitudes in any order.
    """
    frac = cell_area_fractions(lat)
    return frac / frac.mean()


def area_mean(x, lat: np.ndarray, mask=None):
    """Area-weighted mean over the last two axes (latitude, longitude) of a numpy or JAX array.

        mean = sum_ij w_i m_ij x_ij / sum_ij w_i m_ij,

    w = `latitude_weights(lat)` (cell areas), m an optional boolean mask over latitude (nlat,) or
    (nlat, nlon). x: (..., nlat, nlon); returns (...). NaN propagates. The one area mean of the model,
    training and inference code; verification's, on DataArrays, is `verify.regions.spatial_mean`.
    """
    w = latitude_weights(lat)[:, None] * np.ones(x.shape[-1])
    if mask is not None:
        mask = np.asarray(mask)
        w = w * (mask[:, None] if mask.ndim == 1 else mask)
    return (x * w).sum(axis=(-2, -1)) / w.sum()


def is_global(lat: np.ndarray, lon: np.ndarray, tol_deg: float = 1e-6) -> bool:
    """Whether a regular grid covers the whole sphere (all longitudes, pole to pole).

    Latitudes must reach within one grid spacing of each pole (a pole row or a half cell
    short of it, as the equiangular and Gaussian grids do); longitudes must be evenly spaced
    and wrap around 360 degrees.
    """
    lat = np.sort(np.asarray(lat, dtype=np.float64))
    lon = np.asarray(lon, dtype=np.float64) % 360.0
    if lat.size < 2 or lon.size < 2:
        return False
    dlat = np.max(np.diff(lat))
    reaches_poles = lat[0] - dlat <= -90.0 + tol_deg and lat[-1] + dlat >= 90.0 - tol_deg
    dlon = np.diff(np.sort(lon))
    step = 360.0 / lon.size
    wraps = np.allclose(dlon, step, atol=1e-6 * step + tol_deg)
    return bool(reaches_poles and wraps)
