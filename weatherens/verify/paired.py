"""Is one ensemble better than another? Paired per-init comparisons of two forecasts' scores, with intervals.

Both forecasts are scored on the same init times against the same truth, so the per-init
difference d_i = S_a(i) - S_b(i) removes the init-to-init variability the two share: the mean of
d over n inits with its standard error s_d / sqrt(n) and paired t = mean / s.e. (Student's paired
t statistic, the paired test of forecast verification: Hamill 1999, Weather and Forecasting 14,
155-167). With n >= ~10, |t| > 2 is the usual "beyond the sampling noise".

Inits 2.5 days apart are not independent: a weather regime that favours one forecast lasts longer
than that, so d is serially correlated and s_d / sqrt(n) is too small (Geer 2016, "Significance of
changes in medium-range forecast scores", Tellus A 68, 30229). `mean_interval` inflates it as an
AR(1) process of lag-1 autocorrelation rho would need, `ratio_interval` and `compare` turn it into an
interval on the scorecard's ratio of means (the WeatherBench 2 scorecard quantity, Rasp et al. 2024,
JAMES 16, e2023MS004019), and `skill_fraction` gives an interval by the moving-block bootstrap
(Künsch 1989, Annals of Statistics 17, 1217-1241; Wilks 1997, J. Climate 10, 65-82) for a statistic
whose standard error has no simple formula. Geer 2016 also finds the AR(1) inflation somewhat too
small for the scores of real forecasts (longer memory than AR(1)): read an interval that just
excludes 1 as suggestive.

- `paired_difference`   ratio of means, wins, mean difference, s.e., paired t (no serial correlation)
- `per_init_crps_fair`  (n_init,) global fair CRPS of one channel at one lead, from the stores
- `mean_interval`       t-interval of the mean of a serially correlated series, AR(1)-inflated
- `ratio_interval`      mean(a) / mean(b) with the interval of 1 + mean(a - b) / mean(b)
- `moving_block_bootstrap`  percentile interval of any statistic of paired series, resampled in blocks
- `skill_fraction`      (CRPS_clim - CRPS_ml) / (CRPS_clim - CRPS_limit) with a block-bootstrap interval
- `compare`             `ratio_interval` over every lead (region, level, ...) of two `{v}_per_init` arrays
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import xarray as xr
from scipy import stats

from weatherens import grid
from weatherens.verify import metrics, regions

MAX_RHO = 0.95  # lag-1 autocorrelations are clipped to [0, MAX_RHO]: beyond, n_eff < n / 39 means "no information"


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


@dataclasses.dataclass(frozen=True)
class MeanInterval:
    """Confidence interval of the mean of a serially correlated series (`mean_interval`).

    Fields are floats (n an int) for a (n,) series and (...) arrays for a (..., n) one."""

    mean: float  # mean of the finite entries
    low: float  # mean -/+ t_{(1+confidence)/2, max(n_eff - 1, 1)} * standard_error
    high: float
    standard_error: float  # s / sqrt(n_eff) = s / sqrt(n) * sqrt((1 + rho) / (1 - rho)); s the s.d. (ddof 1)
    rho: float  # lag-1 autocorrelation, clipped to [0, MAX_RHO]
    n: int  # finite entries
    n_eff: float  # effective sample size n (1 - rho) / (1 + rho)


def _mean_interval(d: np.ndarray, valid: np.ndarray, confidence: float) -> MeanInterval:
    """`mean_interval` of the (..., n) series d over its entries where `valid` (the caller's pairing)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = valid.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, d, 0.0).sum(-1) / n
        dev = np.where(valid, d - mean[..., None], 0.0)  # 0 where missing: no lag-1 product across a gap
        c0 = (dev * dev).sum(-1)
        rho = np.clip(np.nan_to_num((dev[..., 1:] * dev[..., :-1]).sum(-1) / c0, nan=0.0), 0.0, MAX_RHO)
        n_eff = n * (1 - rho) / (1 + rho)
        se = np.where(n >= 2, np.sqrt(c0 / (n - 1) / n_eff), np.nan)
        half = stats.t.ppf((1 + confidence) / 2, np.maximum(n_eff - 1, 1.0)) * se  # real degrees of freedom
    out = dict(mean=mean, low=mean - half, high=mean + half, standard_error=se, rho=rho, n=n, n_eff=n_eff)
    if d.ndim == 1:
        scalars: dict[str, Any] = {k: int(v) if k == "n" else float(v) for k, v in out.items()}
        return MeanInterval(**scalars)
    return MeanInterval(**out)


def mean_interval(d: npt.ArrayLike, confidence: float = 0.95) -> MeanInterval:
    """Confidence interval of the mean of d, a (n,) series (or (..., n), one per leading index) ordered in
    time along its last axis at equal spacing (the per-init score differences of two forecasts).

    NaN entries are dropped: n counts the finite ones; the lag-1 products skip a gap (an interior NaN),
    so inits that are not neighbours are never paired. With m the mean and s^2 = sum (d_i - m)^2 / (n - 1):

        rho   = sum_i (d_i - m)(d_{i+1} - m) / sum_i (d_i - m)^2     lag-1 autocorrelation (Box & Jenkins),
                clipped to [0, MAX_RHO] (a negative estimate is noise for forecast scores, Geer 2016)
        n_eff = n (1 - rho) / (1 + rho)                             the AR(1) effective sample size
        s.e.  = s / sqrt(n_eff)                                     variance inflated by (1+rho)/(1-rho)
        mean -/+ t_{(1 + confidence)/2, max(n_eff - 1, 1)} s.e.

    For an AR(1) process var(mean) -> sigma^2 (1 + rho) / ((1 - rho) n): the inflation of Geer 2016
    (Tellus A 68, 30229, section 5) and Wilks 2011 (Statistical Methods in the Atmospheric Sciences,
    eq. 5.12), with n_eff - 1 degrees of freedom in the Student t quantile. rho estimated from few inits
    is biased low (by about (1 + 4 rho) / n), so the interval is a little short for n of a few tens.
    """
    d = np.asarray(d, np.float64)
    if d.ndim < 1:
        raise ValueError(f"mean_interval needs a (..., n) series, got shape {d.shape}")
    return _mean_interval(d, np.isfinite(d), confidence)


@dataclasses.dataclass(frozen=True)
class RatioInterval:
    """mean(a) / mean(b) with its interval from the paired differences (`ratio_interval`).

    Fields are floats for (n,) series and (...) arrays for (..., n) ones."""

    ratio: float  # mean(a) / mean(b) over the inits where both are finite
    low: float  # 1 + difference.low / mean(b)
    high: float  # 1 + difference.high / mean(b)
    significant: bool  # the interval excludes 1 (low > 1 or high < 1)
    difference: MeanInterval  # of d = a - b


def _ratio_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> RatioInterval:
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"paired scores need two equal (..., n) arrays, got {a.shape} and {b.shape}")
    valid = np.isfinite(a) & np.isfinite(b)
    diff = _mean_interval(a - b, valid, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = valid.sum(-1)
        mean_a, mean_b = np.where(valid, a, 0.0).sum(-1) / n, np.where(valid, b, 0.0).sum(-1) / n
        ends = 1 + np.stack([np.asarray(diff.low), np.asarray(diff.high)]) / mean_b  # swapped if mean(b) < 0
        low, high, ratio = np.min(ends, 0), np.max(ends, 0), mean_a / mean_b
    significant = (low > 1) | (high < 1)
    if a.ndim == 1:
        return RatioInterval(float(ratio), float(low), float(high), bool(significant), diff)
    return RatioInterval(ratio, low, high, significant, diff)


def ratio_interval(a: npt.ArrayLike, b: npt.ArrayLike, confidence: float = 0.95) -> RatioInterval:
    """The scorecard ratio mean(a) / mean(b) of two forecasts' per-init scores (n,) (or (..., n)), paired
    by init and ordered in time along the last axis, with the interval of its paired differences.

    Inits where a or b is NaN are dropped from both. ratio = mean(a) / mean(b) = 1 + mean(d) / mean(b),
    d = a - b, so the interval is 1 + (`mean_interval` of d) / mean(b): mean(b) is taken as known (its
    sampling error is second order near ratio 1), and "the interval excludes 1" is exactly the paired test
    of mean(d) = 0 (Hamill 1999, Wea. Forecasting 14, 155-167) with the AR(1) inflation of Geer 2016.
    WeatherBench 2 scorecards show this ratio as 100 (ratio - 1) % (Rasp et al. 2024, JAMES 16).
    """
    return _ratio_interval(np.asarray(a, np.float64), np.asarray(b, np.float64), confidence)


def default_block(n: int) -> int:
    """Block length ceil(n^(1/3)) for `moving_block_bootstrap` of n inits.

    The block length that minimises the mean squared error of block-bootstrap variance and distribution
    estimates grows as n^(1/3) (Hall, Horowitz & Jing 1995, Biometrika 82, 561-574; Künsch 1989); the
    constant depends on the unknown correlation, and 1 is the natural scale. 60 inits 2.5 days apart give
    blocks of 4 (10 days), a year of them blocks of 6 (15 days): longer than the few days over which
    score differences of medium-range forecasts decorrelate. Blocks that are too short make the interval
    too narrow; pass `block` when the series is known to remember longer.
    """
    return max(1, math.ceil(n ** (1 / 3) - 1e-9))


def moving_block_bootstrap(statistic: Callable[..., np.ndarray], series: tuple[npt.ArrayLike, ...],
                           block: int | None = None, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                           circular: bool = True) -> tuple[float, float]:
    """Percentile interval of statistic(*series) by the moving-block bootstrap, resampling the series jointly.

    series: (n,) arrays paired by init and ordered in time; each replicate is ceil(n / block) blocks of
    `block` consecutive inits (the same blocks in every series, which keeps the pairing), cut to n.
    statistic: called once with the replicates, each (n_boot, n), and must reduce the last axis to
    (n_boot,) values (e.g. `lambda a, b: a.mean(-1) / b.mean(-1)`). Blocks start anywhere and wrap around
    the end when `circular` (Politis & Romano 1992, so every init is drawn equally often), or start in
    [0, n - block] (Künsch 1989, Annals of Statistics 17, 1217-1241); in both, dependence within a block
    is kept (Wilks 1997, J. Climate 10, 65-82). Interval: the (1 -/+ confidence)/2 quantiles of the
    finite-or-infinite replicates (NaN ones dropped). block: `default_block(n)` when None.
    """
    xs = [np.asarray(s, np.float64) for s in series]
    n = xs[0].shape[0] if xs else 0
    if not xs or any(x.shape != (n,) for x in xs) or n < 2:
        raise ValueError(f"moving_block_bootstrap needs equal (n,) series with n >= 2, got "
                         f"{[x.shape for x in xs]}")
    block = default_block(n) if block is None else int(block)
    if not 1 <= block <= n:
        raise ValueError(f"block must lie in [1, {n}], got {block}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    k = math.ceil(n / block)
    starts = rng.integers(0, n if circular else n - block + 1, size=(n_boot, k))
    index = ((starts[..., None] + np.arange(block)) % n).reshape(n_boot, k * block)[:, :n]
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.asarray(statistic(*(x[index] for x in xs)), np.float64)
    if values.shape != (n_boot,):
        raise ValueError(f"statistic must return (n_boot,) = ({n_boot},) values, got {values.shape}")
    low, high = np.nanquantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


class SkillFraction(NamedTuple):
    """(value, low, high) of `skill_fraction`, and the inits used."""

    value: float
    low: float
    high: float
    n: int


def _skill_fraction(clim: np.ndarray, ml: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """(mean(clim) - mean(ml)) / (mean(clim) - mean(limit)) over the last axis."""
    c = clim.mean(-1)
    return (c - ml.mean(-1)) / (c - limit.mean(-1))


def skill_fraction(clim: npt.ArrayLike, ml: npt.ArrayLike, limit: npt.ArrayLike, confidence: float = 0.95,
                   n_boot: int = 2000, seed: int = 0, block: int | None = None) -> SkillFraction:
    """How far a forecast goes from climatology towards a limit: (mean(clim) - mean(ml)) / (mean(clim) -
    mean(limit)) of three (n,) per-init score series (e.g. fair CRPS) paired by init, ordered in time.

    0: no better than climatology; 1: as good as the limit (e.g. the best available ensemble). The
    percentile interval comes from `moving_block_bootstrap` of the triples (clim_i, ml_i, limit_i), which
    keeps both the pairing and the serial correlation (Künsch 1989; Wilks 1997); a ratio of means has no
    simple standard error. Inits where any of the three is NaN are dropped.
    """
    c, m, lim = (np.asarray(x, np.float64) for x in (clim, ml, limit))
    if not c.shape == m.shape == lim.shape or c.ndim != 1:
        raise ValueError(f"skill_fraction needs three equal (n,) series, got {c.shape}, {m.shape}, {lim.shape}")
    keep = np.isfinite(c) & np.isfinite(m) & np.isfinite(lim)
    c, m, lim = c[keep], m[keep], lim[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(_skill_fraction(c, m, lim))
    low, high = moving_block_bootstrap(_skill_fraction, (c, m, lim), block, n_boot, seed, confidence)
    return SkillFraction(value, low, high, int(keep.sum()))


def compare(per_init_a: xr.DataArray, per_init_b: xr.DataArray, confidence: float = 0.95) -> xr.Dataset:
    """`ratio_interval` of forecast a against forecast b at every index of their other dims (lead_time,
    region, level, ...), init_time reduced: the scorecard's ratios with their intervals.

    per_init_a, per_init_b: per-init scores with dim init_time (sorted, equally spaced: `weatherens verify`'s
    `{v}_per_init` selected to one metric), aligned on their common coordinates (inner join: only the
    inits both scored are paired) and broadcast. Returns a Dataset over the other dims with ratio, low,
    high, significant (bool), difference (mean of a - b), standard_error (of that mean), rho, n (finite
    pairs) and n_eff; attrs confidence. Non-index coords of a that do not involve init_time are kept.
    """
    if "init_time" not in per_init_a.dims or "init_time" not in per_init_b.dims:
        raise ValueError(f"compare needs per-init scores with dim init_time, got {per_init_a.dims} and "
                         f"{per_init_b.dims}")
    a, b = xr.align(per_init_a, per_init_b.reset_coords(drop=True), join="inner")
    a, b = xr.broadcast(a, b)
    a = a.transpose(..., "init_time")
    b = b.transpose(*a.dims)
    r = _ratio_interval(a.values.astype(np.float64), b.values.astype(np.float64), confidence)
    dims = a.dims[:-1]
    coords = {k: v for k, v in a.coords.items() if "init_time" not in v.dims}
    variables = dict(ratio=r.ratio, low=r.low, high=r.high, significant=r.significant,
                     difference=r.difference.mean, standard_error=r.difference.standard_error,
                     rho=r.difference.rho, n=r.difference.n, n_eff=r.difference.n_eff)
    return xr.Dataset({k: (dims, np.asarray(v)) for k, v in variables.items()}, coords=coords,
                      attrs={"confidence": confidence})
