"""Regular latitude/longitude grids and their area weights (numpy only).

Conventions (WeatherBench 2, `weatherbench2/metrics.py` and `regridding.py`):
latitude ascending in degrees north, longitude 0 -> 360 degrees east; a cell's
latitude bounds are the midpoints between neighbouring latitudes, closed by -90 and +90.
"""

from __future__ import annotations

import numpy as np


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

    Area of the band between phi_a and phi_b is 2 pi r^2 (sin phi_b - sin phi_a).
    """
    edges = np.deg2rad(latitude_bounds(lat))
    return 0.5 * np.diff(np.sin(edges))


def latitude_weights(lat: np.ndarray) -> np.ndarray:
    """Area weights w_i proportional to sin(phi_{i+1/2}) - sin(phi_{i-1/2}), mean 1, shape (nlat,).

    Same as WeatherBench 2 `get_lat_weights` (cell areas, normalised to mean 1).
    """
    frac = cell_area_fractions(lat)
    return frac / frac.mean()


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
