"""Paired per-init comparison of two ensembles: hand-computed statistics and a brute-force CRPS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from weatherens import grid
from weatherens.verify import paired


def test_paired_difference_by_hand():
    r = paired.paired_difference(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0]))
    # d = (-1, 0, -2): mean -1, s.d. 1, s.e. 1/sqrt(3), t = -sqrt(3); a lower in 2 of 3
    assert (r.a_better, r.n) == (2, 3)
    assert r.ratio_of_means == pytest.approx(6 / 9)
    assert r.mean == pytest.approx(-1.0)
    assert r.standard_error == pytest.approx(1 / np.sqrt(3))
    assert r.t == pytest.approx(-np.sqrt(3))
    with pytest.raises(ValueError, match="n >= 2"):
        paired.paired_difference(np.array([1.0]), np.array([2.0]))


def test_per_init_crps_fair_equals_a_brute_force_loop():
    rng = np.random.default_rng(0)
    inits = pd.date_range("2000-01-01", periods=3, freq="5D").values
    leads = np.array([6, 12], "timedelta64[h]").astype("timedelta64[ns]")
    lat, lon, members = np.array([-60.0, -20.0, 20.0, 60.0]), np.arange(0.0, 360.0, 45.0), 4
    fc = xr.Dataset({"temperature": (("time", "prediction_timedelta", "number", "level", "latitude", "longitude"),
                                     rng.normal(size=(3, 2, members, 2, 4, 8)).astype(np.float32))},
                    coords={"time": inits, "prediction_timedelta": leads, "number": np.arange(members),
                            "level": [500, 850], "latitude": lat, "longitude": lon})
    times = pd.date_range("2000-01-01", "2000-01-12", freq="6h").values
    truth = xr.Dataset({"temperature": (("time", "level", "latitude", "longitude"),
                                        rng.normal(size=(len(times), 2, 4, 8)))},
                       coords={"time": times, "level": [500, 850], "latitude": lat, "longitude": lon})
    got = paired.per_init_crps_fair(fc, truth, "temperature", 850, leads[1])
    w = grid.latitude_weights(lat)
    for i, t0 in enumerate(inits):
        x = fc["temperature"].values[i, 1, :, 1].astype(np.float64)  # (M, lat, lon)
        y = truth["temperature"].sel(time=t0 + leads[1], level=850).values
        crps = np.zeros((4, 8))
        for a in range(4):
            for b in range(8):
                skill = np.mean(np.abs(x[:, a, b] - y[a, b]))
                spread = sum(abs(x[j, a, b] - x[k, a, b]) for j in range(members) for k in range(members))
                crps[a, b] = skill - spread / (2 * members * (members - 1))
        assert got[i] == pytest.approx(np.mean(crps * w[:, None]), rel=1e-6)
