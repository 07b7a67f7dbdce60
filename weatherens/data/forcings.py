"""Forcings computed from the date alone: time-of-year and time-of-day features, TOA insolation.

`compute(times, lat, lon, names)` -> float32 array (time, forcing, latitude, longitude).

- ``year_progress_sin``, ``year_progress_cos``: sin / cos of 2 pi p, with p the fraction of the
  (tropical, 365.24219-day) year, as GraphCast's `data_utils.get_year_progress`: p = (seconds since
  1970-01-01T00 UTC / 86400 / 365.24219) mod 1. So p = 0 exactly at 1970-01-01T00 and, because the
  calendar year averages 365.2425 days, within about a day of each later Jan 1 00 UTC (p = 0.99927 at
  2000-01-01T00). Unlike a calendar fraction it is continuous across year ends and in phase with the
  seasons. Constant over the grid. Units 1.
- ``day_progress_sin``, ``day_progress_cos``: sin / cos of 2 pi q with q the local mean solar time as
  a fraction of a day, q = (UTC seconds of day / 86400 + longitude / 360) mod 1, as GraphCast's
  `get_day_progress`. Varies with longitude only. Units 1.
- ``toa_incident_solar_radiation``: the *instantaneous* top-of-atmosphere incident solar flux in
  W m**-2 (`UNITS`), S0 (r0/r)^2 max(cos(solar zenith angle), 0), with S0 = 1361 W m**-2 (Kopp &
  Lean 2011, GRL 38, L01706, as `dinosaur.radiation.TOTAL_SOLAR_IRRADIANCE`). Declination,
  equation of time and Earth-Sun distance come from the Astronomical Almanac's low-precision
  formulas for the Sun (accurate to 0.01 deg for 1950-2050; Michalsky 1988, "The Astronomical
  Almanac's algorithm for approximate solar position (1950-2050)", Solar Energy 40, 227-235), which
  follow the orbit continuously in time (no calendar, so no leap-year drift). They are more accurate
  than `dinosaur.radiation`'s (sinusoidal declination with a fixed equinox day, off by ~1.5 deg in
  late September) and than Spencer's (1971) day-of-year Fourier series (off by ~0.4 deg in 2000).
  NOTE: ERA5's variable of the same name (WeatherBench 2 `toa_incident_solar_radiation`) is the
  accumulation over the preceding hour in J m**-2; ours is the instantaneous flux in W m**-2
  (about ERA5's value / 3600, half an hour later). Normalization statistics must come from this
  function, not from an ERA5 store.

Pure numpy, vectorised over times: 8 times on 32 x 64 take well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FORCINGS = (
    "year_progress_sin",
    "year_progress_cos",
    "day_progress_sin",
    "day_progress_cos",
    "toa_incident_solar_radiation",
)
UNITS = {name: "1" for name in FORCINGS} | {"toa_incident_solar_radiation": "W m**-2"}

SOLAR_CONSTANT = 1361.0  # W m**-2, total solar irradiance at 1 au (Kopp & Lean 2011)
DAYS_PER_TROPICAL_YEAR = 365.24219  # as GraphCast's AVG_DAY_PER_YEAR
SECONDS_PER_DAY = 86400.0
_EPOCH = np.datetime64("1970-01-01T00:00:00", "ns")
_J2000 = np.datetime64("2000-01-01T12:00:00", "ns")


def _as_times(times) -> np.ndarray:
    times = np.atleast_1d(np.asarray(times))
    if not np.issubdtype(times.dtype, np.datetime64) or times.ndim != 1:
        raise ValueError(f"forcings: times must be a 1-D datetime64 array, got {times.dtype} {times.shape}")
    return times.astype("datetime64[ns]")


def _seconds_since_epoch(times: np.ndarray) -> np.ndarray:
    return (times - _EPOCH) / np.timedelta64(1, "s")


def year_progress(times) -> np.ndarray:
    """Fraction of the tropical year since 1970-01-01T00 UTC, mod 1, shape (T,), float64."""
    years = _seconds_since_epoch(_as_times(times)) / SECONDS_PER_DAY / DAYS_PER_TROPICAL_YEAR
    return np.mod(years, 1.0)


def day_progress(times, lon) -> np.ndarray:
    """Local mean solar time as a fraction of a day, shape (T, nlon), float64; lon in degrees east."""
    utc = np.mod(_seconds_since_epoch(_as_times(times)), SECONDS_PER_DAY) / SECONDS_PER_DAY
    return np.mod(utc[:, None] + np.asarray(lon, np.float64)[None, :] / 360.0, 1.0)


def solar_position(times) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(declination [rad], equation of time [min], (r0/r)^2), each shape (T,), float64.

    Astronomical Almanac low-precision formulas (Michalsky 1988), n = days since J2000.0
    (2000-01-01T12 UTC): mean longitude L = 280.460 + 0.9856474 n, mean anomaly
    g = 357.528 + 0.9856003 n, ecliptic longitude lambda = L + 1.915 sin g + 0.020 sin 2g,
    obliquity eps = 23.439 - 4e-7 n (degrees); declination asin(sin eps sin lambda), right
    ascension alpha = atan2(cos eps sin lambda, cos lambda), equation of time = L - alpha
    (4 min per degree), distance r = 1.00014 - 0.01671 cos g - 0.00014 cos 2g au.
    """
    n = (_as_times(times) - _J2000) / np.timedelta64(1, "D")
    mean_longitude = np.deg2rad(np.mod(280.460 + 0.9856474 * n, 360.0))
    g = np.deg2rad(np.mod(357.528 + 0.9856003 * n, 360.0))
    ecliptic_longitude = mean_longitude + np.deg2rad(1.915 * np.sin(g) + 0.020 * np.sin(2 * g))
    obliquity = np.deg2rad(23.439 - 4e-7 * n)
    declination = np.arcsin(np.sin(obliquity) * np.sin(ecliptic_longitude))
    right_ascension = np.arctan2(np.cos(obliquity) * np.sin(ecliptic_longitude), np.cos(ecliptic_longitude))
    eot = np.mod(mean_longitude - right_ascension + np.pi, 2 * np.pi) - np.pi  # radians, |.| < 17 min
    distance_au = 1.00014 - 0.01671 * np.cos(g) - 0.00014 * np.cos(2 * g)
    return declination, np.rad2deg(eot) * 4.0, distance_au**-2


def toa_incident_solar_radiation(times, lat, lon) -> np.ndarray:
    """Instantaneous TOA incident solar flux, W m**-2, shape (T, nlat, nlon), float64.

    cos(zenith) = sin(phi) sin(delta) + cos(phi) cos(delta) cos(h), with the hour angle
    h = 2 pi (UTC day fraction + lon / 360 + EoT / 1440) - pi (true solar time minus noon).
    """
    times = _as_times(times)
    declination, eot_minutes, distance_factor = solar_position(times)
    phi = np.deg2rad(np.asarray(lat, np.float64))
    utc = np.mod(_seconds_since_epoch(times), SECONDS_PER_DAY) / SECONDS_PER_DAY
    solar_day = utc[:, None] + np.asarray(lon, np.float64)[None, :] / 360.0 + eot_minutes[:, None] / 1440.0
    cos_h = np.cos(2 * np.pi * solar_day - np.pi)  # (T, nlon)
    a = np.sin(phi)[None, :, None] * np.sin(declination)[:, None, None]  # (T, nlat, 1)
    b = np.cos(phi)[None, :, None] * np.cos(declination)[:, None, None]
    cos_zenith = a + b * cos_h[:, None, :]
    return (SOLAR_CONSTANT * distance_factor)[:, None, None] * np.maximum(cos_zenith, 0.0)


def compute(times, lat, lon, names: Sequence[str] = FORCINGS) -> np.ndarray:
    """Forcings `names` at `times` on the grid (lat, lon), float32, shape (T, F, nlat, nlon).

    Args:
      times: datetime64 array (T,), UTC.
      lat, lon: cell-centre latitudes and longitudes in degrees, shapes (nlat,), (nlon,).
      names: a subset of FORCINGS, in the channel order wanted.
    """
    names = tuple(names)
    unknown = [n for n in names if n not in FORCINGS]
    if unknown:
        raise ValueError(f"forcings: unknown {unknown}; known: {list(FORCINGS)}")
    times = _as_times(times)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    out = np.empty((times.size, len(names), lat.size, lon.size), np.float32)
    year = day = None
    for f, name in enumerate(names):
        if name.startswith("year_progress"):
            year = 2 * np.pi * year_progress(times) if year is None else year
            out[:, f] = (np.sin(year) if name.endswith("sin") else np.cos(year))[:, None, None]
        elif name.startswith("day_progress"):
            day = 2 * np.pi * day_progress(times, lon) if day is None else day
            out[:, f] = (np.sin(day) if name.endswith("sin") else np.cos(day))[:, None, :]
        else:
            out[:, f] = toa_incident_solar_radiation(times, lat, lon)
    return out
