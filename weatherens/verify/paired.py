"""Is one ensemble better than another? A paired comparison of global fair CRPS over init times.

Both forecasts are scored on the same init times against the same truth, so the per-init
difference d_i = S_a(i) - S_b(i) removes the init-to-init variability the two share: the mean of
d over n inits with its standard error s_d / sqrt(n) and paired t = mean / s.e. (Student's paired
t statistic, the paired test of forecast verification: Hamill 1999, Weather and Forecasting 14,
155-167). With n >= ~10, |t| > 2 is the usual "beyond the sampling noise"; inits a few days apart
are nearly independent at leads of days (when they are not, the s.e. is too small).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from weatherens import grid
from weatherens.verify import metrics, regions


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Per-init scores of a and b compared (a better where lower)."""

    ratio_of_means: float  # mean(S_a) / mean(S_b): the scorecard's ratio
    a_better: int  # inits where S_a < S_b
    n: int  # inits
    mean: float  # mean(S_a - S_b), in the score's units
    standard_error: float  # sample s.d. (ddof 1) of S_a - S_b over sqrt(n)
    t: float  # mean / standard_error


def paired_difference(score_a: np.ndarray, score_b: np.ndarray) -> PairedDifference:
    """Compare two (n_init,) score series paired by init (n >= 2)."""
    a, b = np.asarray(score_a, np.float64), np.asarray(score_b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"paired scores need two equal (n_init,) series with n >= 2, got {a.shape} and {b.shape}")
    d = a - b
    se = float(d.std(ddof=1) / np.sqrt(d.size))
    return PairedDifference(float(a.mean() / b.mean()), int((d < 0).sum()), int(d.size), float(d.mean()), se,
                            float(d.mean() / se) if se > 0 else float("nan"))


def per_init_crps_fair(forecast: xr.Dataset, truth: xr.Dataset, variable: str, level: int | None,
                       lead: np.timedelta64) -> np.ndarray:
    """(n_init,) area-weighted global mean fair CRPS of one channel at one lead, float64.

    `forecast` in WeatherBench 2 layout (time = init, prediction_timedelta, number, [level], latitude,
    longitude); `truth` an ERA5-schema store on the same grid holding every valid time. Weights:
    `grid.latitude_weights` (WB2's cell areas), as `weatherens verify` uses for its global means.
    """
    f = forecast[variable].sel(prediction_timedelta=lead)
    y = truth[variable]
    if level is not None:
        f, y = f.sel(level=level), y.sel(level=level)
    inits = f["time"].values
    y = y.sel(time=inits + lead).assign_coords(time=inits)
    crps = metrics.crps_fair(f.load(), y.load())
    return regions.spatial_mean(crps, grid.latitude_weights(f["latitude"].values)).values.astype(np.float64)
