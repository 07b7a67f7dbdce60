"""Pointwise ensemble metrics on xarray DataArrays (numpy- or dask-backed).

Each function scores every point (init time, lead, level, lat, lon, ...) over the member dim
(`number`, WeatherBench 2 convention) and returns float64; spatial and temporal means are the
caller's (`regions.spatial_mean`, then a mean over init times), as in WeatherBench 2
(`weatherbench2/metrics.py`), whose definitions these follow unless stated.

Members are handled by `xr.apply_ufunc(..., dask="parallelized")` with the member dim as the one
core dim (`_kernels.apply_members`): a dask-backed forecast stays lazy and each task holds one
chunk, so memory is bounded by the caller's chunks over space/time (a forecast chunked along
members is rechunked to one member chunk). Inside a chunk, points are processed in cache-sized
blocks (extra memory: two buffers of max(64 Ki, 256 M) elements, whatever the chunk size), and no
function forms members x members: the CRPS spread term is O(M log M) by sorting.
NaN in the truth or in any member gives NaN (rank -1 in `ranks`). Forecast and truth must share
their coordinates exactly (apply_ufunc's join="exact"): align by valid time first (`evaluation.evaluate`).

References
  Gneiting, T. & Raftery, A. E. (2007). Strictly proper scoring rules, prediction, and estimation. JASA 102, 359-378.
  Ferro, C. A. T. (2014). Fair scores for ensemble forecasts. QJRMS 140, 1917-1923.
  Zamo, M. & Naveau, P. (2018). Estimation of the continuous ranked probability score with limited
    information and applications to ensemble weather forecasts. Math. Geosci. 50, 209-234.
  Fortin, V., Abaza, M., Anctil, F. & Turcotte, R. (2014). Why should ensemble spread match the RMSE
    of the ensemble mean? J. Hydrometeor. 15, 1708-1713.
  Hamill, T. M. (2001). Interpretation of rank histograms for verifying ensemble forecasts. MWR 129, 550-560.
  Rasp, S. et al. (2024). WeatherBench 2. JAMES 16, e2023MS004019 (metrics.py).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from typing import NamedTuple, cast

import numpy as np
import xarray as xr

from weatherens.data.names import MEMBER_DIM
from weatherens.verify._kernels import apply_members
from weatherens.verify.regions import SPATIAL_DIMS, as_spatial, region_masks, spatial_mean

__all__ = [
    "crps_fair", "crps_ecdf", "ensemble_mean_squared_error", "ensemble_variance", "spread_skill",
    "SpreadSkill", "ranks", "rank_histogram", "brier_score", "anomaly_correlation", "spatial_mean",
    "region_masks",
]

MEMBER = MEMBER_DIM


# ----------------------------------------------------------------------------- CRPS


@functools.cache
def _rank_coefficients(m: int) -> np.ndarray:
    return np.arange(1 - m, m, 2, dtype=np.float64)  # 2i - M - 1 for i = 1..M


def _crps(block, scratch, y, *, denominator):
    m = block.shape[-1]
    block.sort(axis=-1)  # in the input precision: the float32 -> float64 cast keeps the order
    d = np.subtract(block, y[:, None], out=scratch, dtype=np.float64)  # sum_i c_i = 0, so y drops out
    spread = np.einsum("ij,j->i", d, _rank_coefficients(m))  # einsum, not BLAS: no thread pools
    np.abs(d, out=d)
    return np.einsum("ij->i", d) / m - spread / denominator


def crps_fair(forecast: xr.DataArray, truth: xr.DataArray, member_dim: str = MEMBER) -> xr.DataArray:
    """Fair (unbiased) ensemble CRPS at every point.

        CRPS_fair = 1/M sum_j |x_j - y|  -  1/(2 M (M-1)) sum_{j,k} |x_j - x_k|

    the unbiased estimator of the CRPS of the distribution the M members are drawn from
    (Ferro 2014; Zamo & Naveau 2018 "CRPS_Fair", equal to their "CRPS_PWM"; WB2 `CRPS`, which
    uses this M(M-1) normalisation). The spread sum is O(M log M) from the sorted members
    x_(1) <= ... <= x_(M):  sum_{j,k} |x_j - x_k| = 2 sum_i (2i - M - 1) x_(i).
    Undefined for one member (ValueError); use `crps_ecdf`.
    """
    m = forecast.sizes.get(member_dim, 0)
    kernel = functools.partial(_crps, denominator=m * (m - 1))
    return apply_members("crps_fair", kernel, forecast, member_dim, truth, min_members=2)


def crps_ecdf(forecast: xr.DataArray, truth: xr.DataArray, member_dim: str = MEMBER) -> xr.DataArray:
    """Standard ensemble CRPS, the CRPS of the members' empirical CDF, at every point.

        CRPS_ecdf = 1/M sum_j |x_j - y|  -  1/(2 M^2) sum_{j,k} |x_j - x_k|

    (Gneiting & Raftery 2007, kernel form with the empirical CDF; Zamo & Naveau 2018 "CRPS_INT", equal
    to their "CRPS_NRG"; properscoring `crps_ensemble`, scores `method="ecdf"`). As an estimate of
    the CRPS of the distribution the members come from it is biased high, by E|X - X'| / (2M);
    with M = 1 it is the absolute error |x - y|. Spread sum as in `crps_fair`.
    """
    m = forecast.sizes.get(member_dim, 0)
    kernel = functools.partial(_crps, denominator=m * m)
    return apply_members("crps_ecdf", kernel, forecast, member_dim, truth)


# ----------------------------------------------------------------------------- mean, spread


def _mean_squared_error(block, scratch, y):
    return (block.mean(axis=-1, dtype=np.float64) - y) ** 2


def _variance(block, scratch):
    x = np.subtract(block, block.mean(axis=-1, keepdims=True, dtype=np.float64), out=scratch, dtype=np.float64)
    return np.einsum("ij,ij->i", x, x) / (x.shape[-1] - 1)


def ensemble_mean_squared_error(
    forecast: xr.DataArray, truth: xr.DataArray, member_dim: str = MEMBER
) -> xr.DataArray:
    """Squared error of the ensemble mean, (1/M sum_j x_j - y)^2, at every point (WB2
    `SpatialEnsembleMeanMSE`; `EnsembleMeanMSE` after the spatial mean). Biased high by var/M
    as an estimate of (E[X] - y)^2 (WB2 `DebiasedEnsembleMeanMSE`); `spread_skill` accounts for it."""
    return apply_members("ensemble_mean_squared_error", _mean_squared_error, forecast, member_dim, truth)


def ensemble_variance(forecast: xr.DataArray, member_dim: str = MEMBER) -> xr.DataArray:
    """Unbiased member variance, 1/(M-1) sum_j (x_j - xbar)^2, at every point (WB2
    `SpatialEnsembleVariance`, ddof = 1). Needs two members (ValueError otherwise; WB2 returns 0).
    Two-pass in float64 per block."""
    return apply_members("ensemble_variance", _variance, forecast, member_dim, min_members=2)


class SpreadSkill(NamedTuple):
    spread: object
    rmse: object
    ssr: object
    ssr_debiased: object


def spread_skill(spread_mse: float | np.ndarray | xr.DataArray, skill_mse: float | np.ndarray | xr.DataArray,
                 members: int) -> SpreadSkill:
    """Spread, skill and spread-skill ratios from already-averaged variance and squared error.

    `spread_mse` is the mean (area-weighted over space, then over init times) of
    `ensemble_variance` (ddof = 1), `skill_mse` the same mean of `ensemble_mean_squared_error`;
    floats, numpy arrays or DataArrays. Returns

        spread       = sqrt(mean var)
        rmse         = sqrt(mean MSE)
        ssr          = spread / rmse        (WeatherBench-X `SpreadSkillRatio`, "biased"; Rasp et al. 2024)
        ssr_debiased = sqrt((M + 1) / M) * spread / rmse     (Fortin et al. 2014)

    For a perfect (exchangeable) ensemble of M members, E[var] = sigma^2 and
    E[MSE] = (1 + 1/M) sigma^2, so ssr -> sqrt(M / (M + 1)) and ssr_debiased -> 1.
    """
    if members < 2:
        raise ValueError(f"spread_skill: needs at least 2 members, got {members}")
    spread, rmse = np.sqrt(spread_mse), np.sqrt(skill_mse)
    ssr = spread / rmse
    return SpreadSkill(spread, rmse, ssr, np.sqrt((members + 1) / members) * ssr)


# ----------------------------------------------------------------------------- Brier


def _flags(scratch):
    """A boolean (n, M) work array inside the float64 scratch."""
    return scratch.view(np.bool_)[:, : scratch.shape[-1]]


def _brier(block, scratch, y, threshold, *, debiased):
    m = block.shape[-1]
    t = threshold.astype(np.float64)
    p = np.count_nonzero(np.greater(block, t[:, None], out=_flags(scratch)), axis=-1) / m
    score = (p - (y > t)) ** 2
    if debiased:
        score -= p * (1.0 - p) / (m - 1)
    score[np.isnan(y) | np.isnan(t) | np.isnan(block).any(axis=-1)] = np.nan
    return score


def brier_score(
    forecast: xr.DataArray, truth: xr.DataArray, threshold: float | xr.DataArray, member_dim: str = MEMBER,
    debiased: bool = False,
) -> xr.DataArray:
    """Brier score of the event "value > threshold" at every point.

        BS = (p - o)^2,  p = 1/M #{j: x_j > t},  o = 1[y > t]    (Brier 1950; WB2 `EnsembleBrierScore`)
        BS_fair = BS - p (1 - p) / (M - 1)                       (Ferro 2014; WB2 `DebiasedEnsembleBrierScore`)

    BS_fair is unbiased for the Brier score of the member-generating distribution, so its mean
    does not depend on M for exchangeable members. `threshold` is a scalar or a DataArray
    broadcastable to truth (e.g. a climatological quantile per gridpoint).
    """
    kernel = functools.partial(_brier, debiased=debiased)
    minimum = 2 if debiased else 1
    return apply_members("brier_score", kernel, forecast, member_dim, truth, threshold, min_members=minimum)


# ----------------------------------------------------------------------------- ranks


def _splitmix64(z):
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _rank(block, scratch, y, *index, key):
    flags = _flags(scratch)
    below = np.count_nonzero(np.less(block, y[:, None], out=flags), axis=-1)
    ties = np.count_nonzero(np.equal(block, y[:, None], out=flags), axis=-1)
    with np.errstate(over="ignore"):
        h = _splitmix64(functools.reduce(np.add, index, np.zeros_like(y, dtype=np.uint64)) ^ key)
    u = (h >> np.uint64(11)) * 2.0**-53  # uniform on [0, 1), one per point
    rank = below + np.minimum(np.floor(u * (ties + 1)).astype(np.int64), ties)
    rank[np.isnan(y) | np.isnan(block).any(axis=-1)] = -1
    return rank


def _coordinate_keys(da: xr.DataArray, dim: str, salt: int) -> xr.DataArray:
    """uint64 hash of each coordinate value along `dim` (its position where there is no coordinate)."""
    if dim in da.coords:
        values = np.asarray(da[dim].values)
        if values.dtype.kind in "mM":
            bits = values.astype("datetime64[ns]" if values.dtype.kind == "M" else "timedelta64[ns]").view(np.int64)
        elif values.dtype.kind == "f":
            bits = values.astype(np.float64).view(np.int64)
        elif values.dtype.kind in "iub":
            bits = values.astype(np.int64)
        else:
            bits = np.array([zlib.crc32(str(v).encode()) for v in values], dtype=np.int64)
    else:
        bits = np.arange(da.sizes[dim], dtype=np.int64)
    with np.errstate(over="ignore"):
        return xr.DataArray(_splitmix64(bits.view(np.uint64) ^ np.uint64(salt)), dims=dim)


def ranks(forecast: xr.DataArray, truth: xr.DataArray, member_dim: str = MEMBER, seed: int = 0) -> xr.DataArray:
    """Rank of the truth among the members at every point, int64 in 0..M (Hamill 2001); -1 where NaN.

        rank = #{j: x_j < y} + U,  U uniform on {0, ..., #{j: x_j = y}}

    Ties are broken at random (Hamill 2001), so an ensemble equal to the truth has a flat
    histogram (WB2 `RankHistogram` counts only the members below the truth: ties pile into low
    ranks). The draw is counter-based: U comes from splitmix64(key(point) XOR splitmix64(seed)),
    where key(point) sums a hash of the point's coordinate value along each non-member dim (its
    position where a dim has no coordinate), salted by the dim's name. So the result is
    reproducible for a seed and the same for a point whatever the dask chunking, transposition or
    subsetting (`evaluation.evaluate` scores blocks of a forecast and gets the ranks of the whole).
    """
    if isinstance(truth, xr.DataArray):  # as apply_ufunc: coordinates must match exactly
        forecast, truth = xr.align(forecast, truth, join="exact")
    fc_dims = [d for d in forecast.dims if d != member_dim]
    dims = fc_dims + [d for d in getattr(truth, "dims", ()) if d not in fc_dims]
    keys = [_coordinate_keys(forecast if d in forecast.dims else truth, d, zlib.crc32(d.encode())) for d in dims]
    with np.errstate(over="ignore"):
        key = _splitmix64(np.uint64(seed % 2**64))
    kernel = functools.partial(_rank, key=key)
    return apply_members("ranks", kernel, forecast, member_dim, truth, *keys, out_dtype=np.int64)


def rank_histogram(
    ranks: xr.DataArray, members: int, weights: np.ndarray | xr.DataArray | None = None,
    dims: Sequence[str] | None = None, normalize: bool = True,
) -> xr.DataArray:
    """Relative frequency of each rank 0..M (dim `rank`, M + 1 bins) over `dims` (default: all).

        h_r = sum_p w_p 1[rank_p = r] / sum_p w_p      (Hamill 2001; WB2 `RankHistogram` averaged)

    with w the latitude (area) weights if given (numpy over latitude, or latitude x longitude, or
    a DataArray; zero weights exclude points, e.g. a region), else 1. Points with rank -1 (NaN)
    are left out. Frequencies sum to 1 over `rank` for each remaining coordinate; with
    `normalize=False` the weighted counts sum_p w_p 1[rank_p = r] instead (to add up over blocks). numpy input:
    one weighted bincount; dask input: a lazy one-hot sum (chunk x (M + 1) booleans per task).
    """
    dims = list(cast("tuple[str, ...]", ranks.dims) if dims is None else dims)
    if weights is None:
        w = xr.ones_like(ranks, dtype=np.float64)
    else:
        w = as_spatial(weights, "weights").astype(np.float64)
    bins = xr.DataArray(np.arange(members + 1), dims="rank", coords={"rank": np.arange(members + 1)})
    if ranks.chunks is not None or w.chunks is not None:
        counts = (ranks == bins).weighted(w).sum(dims)
    else:
        r, w = xr.broadcast(ranks, w)
        keep = [d for d in r.dims if d not in dims]
        r, w = r.transpose(*keep, *dims), w.transpose(*keep, *dims)
        k = int(np.prod([r.sizes[d] for d in keep], dtype=np.int64))
        rv, wv = r.values.reshape(k, -1), w.values.reshape(k, -1)
        if rv.max(initial=0) > members:
            raise ValueError(f"rank_histogram: rank {rv.max()} > members {members}")
        ok = rv >= 0
        flat = (np.arange(k)[:, None] * (members + 1) + rv)[ok]
        hist = np.bincount(flat, weights=wv[ok], minlength=k * (members + 1))
        counts = xr.DataArray(
            hist.reshape([r.sizes[d] for d in keep] + [members + 1]),
            dims=keep + ["rank"],
            coords={**{c: v for c, v in r.coords.items() if set(v.dims) <= set(keep)}, "rank": bins["rank"]},
        )
    return counts / counts.sum("rank") if normalize else counts


# ----------------------------------------------------------------------------- ACC


def anomaly_correlation(
    forecast_mean: xr.DataArray, truth: xr.DataArray, climatology: float | xr.DataArray,
    weights: np.ndarray | xr.DataArray, dims: Sequence[str] = SPATIAL_DIMS,
) -> xr.DataArray:
    """Anomaly correlation coefficient over `dims`, one value per remaining coordinate (e.g. init time).

        ACC = sum w f' o' / sqrt(sum w f'^2  sum w o'^2),   f' = f - c,  o' = y - c

    uncentred (anomalies w.r.t. the climatology c, not their spatial mean), as WB2 `ACC`; w the
    latitude weights (numpy over latitude or latitude x longitude, or a DataArray; a region mask
    multiplied in restricts it). `climatology` must already be aligned with the valid times
    (a DataArray or scalar broadcastable to truth). Float64.
    """
    w = as_spatial(weights, "weights").astype(np.float64)
    fa = forecast_mean.astype(np.float64) - climatology
    oa = truth.astype(np.float64) - climatology
    dims = list(dims)
    return (w * fa * oa).sum(dims) / np.sqrt((w * fa**2).sum(dims) * (w * oa**2).sum(dims))
