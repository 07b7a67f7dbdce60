"""Forcings from the date: known values of the time features, physical limits of TOA insolation."""

from __future__ import annotations

import datetime
import time

import numpy as np
import pytest

from weatherens import grid
from weatherens.data import forcings

S0 = forcings.SOLAR_CONSTANT


def _times(start, hours, count):
    return np.datetime64(start) + np.arange(count) * np.timedelta64(int(hours * 60), "m")


def _toa(times, lat, lon):
    names = ["toa_incident_solar_radiation"]
    return forcings.compute(np.asarray(times, "datetime64[ns]"), lat, lon, names)[:, 0].astype(np.float64)


def test_shape_dtype_and_channel_order():
    t = _times("2000-01-01", 6, 8)
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(64)
    out = forcings.compute(t, lat, lon, forcings.FORCINGS)
    assert out.shape == (8, 5, 32, 64) and out.dtype == np.float32
    swapped = forcings.compute(t, lat, lon, ["day_progress_cos", "year_progress_sin"])
    np.testing.assert_array_equal(swapped[:, 0], out[:, 3])
    np.testing.assert_array_equal(swapped[:, 1], out[:, 0])
    assert forcings.UNITS["toa_incident_solar_radiation"] == "W m**-2"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="toa_incident_solar_radiation"):
        forcings.compute(_times("2000-01-01", 6, 1), [0.0], [0.0], ["solar_flux"])


def test_year_progress():
    # GraphCast's definition: tropical years since 1970-01-01T00 UTC, mod 1
    epoch = np.array(["1970-01-01T00"], "datetime64[s]")
    out = forcings.compute(epoch, [0.0], [0.0], ["year_progress_sin", "year_progress_cos"])
    np.testing.assert_allclose(out[0, :, 0, 0], [0.0, 1.0], atol=1e-7)
    # later Jan 1 00 UTC fall within a day of progress 0 (the calendar year is 365.2425 days)
    jan1 = np.array(["2000-01-01", "2020-01-01", "2024-01-01", "2099-01-01"], "datetime64[s]")
    p = forcings.year_progress(jan1)
    assert np.all(np.minimum(p, 1 - p) < 1 / 365)
    # half a tropical year later: progress 1/2
    half = np.datetime64("1970-01-01T00", "s") + np.timedelta64(int(365.24219 * 86400 / 2), "s")
    np.testing.assert_allclose(forcings.year_progress(half), 0.5, atol=1e-7)


def test_day_progress_is_local_mean_solar_time():
    t = np.array(["2000-06-01T06"], "datetime64[s]")
    lon = np.array([0.0, 90.0, 270.0])
    out = forcings.compute(t, [0.0, 45.0], lon, ["day_progress_sin", "day_progress_cos"])[0]
    # lon 0 at 06 UTC: q = 0.25; lon 90: noon, q = 0.5; lon 270 (= -90): midnight, q = 0
    np.testing.assert_allclose(out[0, 0], np.sin(2 * np.pi * np.array([0.25, 0.5, 0.0])), atol=1e-6)
    np.testing.assert_allclose(out[1, 1], np.cos(2 * np.pi * np.array([0.25, 0.5, 0.0])), atol=1e-6)


def test_subsolar_point_at_equinox_noon():
    lat, lon = np.linspace(-90, 90, 361), grid.longitudes(720)
    flux = _toa(np.array(["2000-03-20T12"], "datetime64[s]"), lat, lon)[0]
    i, j = np.unravel_index(flux.argmax(), flux.shape)
    assert abs(lat[i]) <= 1.0 and min(lon[j], 360 - lon[j]) <= 3.0  # equation of time: ~2 deg east
    np.testing.assert_allclose(flux[180, 0], S0, rtol=0.015)  # (0, 0); distance factor 1.008 in March
    # the night side (the south pole sees the sun just above the horizon: declination -0.15 deg)
    assert np.all(flux[np.abs(lat) < 80][:, (lon > 95) & (lon < 265)] == 0)
    assert flux.min() == 0.0


def test_daily_mean_at_equator_at_equinox():
    # daily mean of S0 max(cos h, 0) over h is S0 / pi (declination ~ 0, distance factor ~ 1)
    flux = _toa(_times("2000-03-20", 5 / 60, 288), [0.0], [0.0])
    np.testing.assert_allclose(flux.mean(), S0 / np.pi, rtol=0.02)


def test_polar_night_and_polar_day_in_december():
    flux = _toa(_times("2000-12-21", 0.5, 48), [-80.0, 80.0], grid.longitudes(64))
    assert np.all(flux[:, 1] == 0)  # 80N: the sun stays below the horizon all day
    assert np.all(flux[:, 0] > 0)  # 80S: it stays above


@pytest.mark.parametrize("when", ["2000-01-03T00", "2000-04-15T09", "2000-07-04T13", "2001-10-30T21"])
def test_global_mean_is_a_quarter_of_the_solar_constant(when):
    # A sphere intercepts pi r^2 of the beam and has area 4 pi r^2: the mean flux is S0 (r0/r)^2 / 4.
    # (r0/r)^2 ~ 1 + 0.033 cos(2 pi doy / 365) (Duffie & Beckman, "Solar Engineering of Thermal
    # Processes", eq. 1.4.1), independent of the Spencer series used in the module.
    t = np.datetime64(when, "s")
    doy = (t.astype("datetime64[D]") - t.astype("datetime64[Y]").astype("datetime64[D]")).astype(int) + 1
    lat, lon = np.linspace(-90, 90, 181), grid.longitudes(360)
    flux = _toa(np.array([t]), lat, lon)[0]
    mean = np.mean(flux * grid.latitude_weights(lat)[:, None])
    np.testing.assert_allclose(mean, S0 * (1 + 0.033 * np.cos(2 * np.pi * doy / 365)) / 4, rtol=0.01)


@pytest.mark.parametrize(
    "when, declination",
    [  # equinoxes and solstices of 2000 and 2024 (UTC, to the minute), US Naval Observatory
        ("2000-03-20T07:35", 0.0), ("2000-06-21T01:48", 23.44), ("2000-09-22T17:27", 0.0),
        ("2000-12-21T13:37", -23.44), ("2024-03-20T03:06", 0.0), ("2024-12-21T09:20", -23.44),
    ],
)
def test_declination_at_equinoxes_and_solstices(when, declination):
    got, _, _ = forcings.solar_position(np.array([when], "datetime64[s]"))
    np.testing.assert_allclose(np.rad2deg(got), declination, atol=0.02)


def test_equation_of_time_extremes():
    # about -14.2 min on 11 February and +16.4 min on 3 November
    _, eot, _ = forcings.solar_position(np.array(["2001-02-11T12", "2001-11-03T12"], "datetime64[s]"))
    np.testing.assert_allclose(eot, [-14.2, 16.4], atol=0.3)


def test_close_to_dinosaur_radiation():
    radiation = pytest.importorskip("dinosaur.radiation")
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(64)
    lon_mesh, lat_mesh = np.meshgrid(np.deg2rad(lon), np.deg2rad(lat))
    for when in ["2000-01-01T00", "2000-03-20T12", "2000-06-21T06", "2000-09-22T18", "2000-12-21T03"]:
        orbital = radiation.datetime_to_orbital_time(datetime.datetime.fromisoformat(when))
        ref = radiation.get_radiation_flux(orbital, lon_mesh, lat_mesh, mean_irradiance=S0, variation=47.0)
        ref = np.asarray(ref)
        ours = _toa(np.array([when], "datetime64[s]"), lat, lon)[0]
        # dinosaur's orbit is simpler (sinusoidal declination from a fixed 20 March equinox: 1.5 deg
        # off by late September, where the largest differences are, near the terminator)
        assert np.abs(ours - ref).max() < 0.04 * S0, when
        assert np.abs(ours - ref).mean() < 0.01 * S0, when


def test_fast_enough_for_the_pipeline():
    t = _times("2000-01-01", 6, 8)
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(64)
    forcings.compute(t, lat, lon)
    start = time.perf_counter()
    for _ in range(100):
        forcings.compute(t, lat, lon)
    assert (time.perf_counter() - start) / 100 < 2e-3  # budget 1 ms; measured ~0.15 ms
