"""The CRPS family as training losses, in JAX (differentiable, float32, jit/vmap-able).

    afCRPS_alpha = 1/M sum_j |x_j - y|  -  (M - 1 + alpha) / (2 M^2 (M - 1)) sum_{j != k} |x_j - x_k|
                 = alpha CRPS_fair + (1 - alpha) CRPS_ecdf

the almost-fair CRPS of AIFS-CRPS (Lang et al. 2024, arXiv:2412.15832, eq. 4): alpha = 1 is the
fair CRPS (Ferro 2014), unbiased for the CRPS of the distribution the members come from, alpha = 0
the standard CRPS of the members' empirical CDF (Gneiting & Raftery 2007). alpha slightly below 1
(AIFS: 0.95) keeps the fair score's spread incentive while avoiding its degenerate minimisers
(all members but one collapsed on the truth). Units: those of the data (here: normalised units).

The pair sum is O(M log M) from the sorted members x_(1) <= ... <= x_(M):
    sum_{j,k} |x_j - x_k| = 2 sum_i (2 i - M - 1) x_(i)
(jnp.sort is differentiable; the same identity as `weatherens.verify.metrics`), so memory is that of
the ensemble, never members x members. As the coefficients sum to 0, the sorted values may be
x_(i) - y: sorting d_j = x_j - y keeps float32 accurate for fields far from 0 (e.g. geopotential).

Weights: latitude (cell-area) weights of mean 1 (`grid.latitude_weights`, as WeatherBench 2) and
per-channel weights (`channel_weights`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from weatherens.config import LEVEL_WEIGHTINGS
from weatherens.data import names


def afcrps(ensemble: jax.Array, target: jax.Array, alpha: float = 0.95, member_axis: int = 0) -> jax.Array:
    """Almost-fair CRPS at every point (formula in the module docstring).

    Args:
      ensemble: (..., M, ...) with the M members at `member_axis` (negative axes count from the end).
      target: the ensemble's shape without the member axis (no broadcasting).
      alpha: in [0, 1]; 1 fair, 0 standard (ecdf). A Python/numpy number is range-checked; a traced
        scalar (e.g. a jit argument) is not. M = 1 is allowed only with alpha = 0, where the score
        is the absolute error |x - y|; the fair part is undefined for one member.

    Returns: target's shape, in the ensemble's float dtype, at least float32 (bfloat16 and float16
    inputs are scored in float32). Non-negative for alpha = 0 up to rounding; the fair score can be
    slightly negative (it is an unbiased estimate, not a distance).
    """
    if isinstance(alpha, numbers.Real) and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"afcrps: alpha = {alpha} is outside [0, 1] (1 fair, 0 standard CRPS)")
    ensemble, target = jnp.asarray(ensemble), jnp.asarray(target)
    if not -ensemble.ndim <= member_axis < ensemble.ndim:
        raise ValueError(f"afcrps: member_axis {member_axis} out of range for ensemble {ensemble.shape}")
    dtype = jnp.promote_types(jnp.result_type(ensemble, target), jnp.float32)
    x = jnp.moveaxis(ensemble, member_axis, -1).astype(dtype)
    m = x.shape[-1]
    if m < 2 and alpha != 0:
        raise ValueError(f"afcrps: {m} member(s); the (almost-)fair CRPS needs at least 2 (or alpha = 0)")
    if x.shape[:-1] != target.shape:
        raise ValueError(f"afcrps: ensemble {ensemble.shape} (members on axis {member_axis}) does not match "
                         f"target {target.shape}")
    d = x - target.astype(dtype)[..., None]
    skill = jnp.abs(d).mean(axis=-1)
    if m == 1:
        return skill
    coefficients = jnp.arange(1 - m, m, 2, dtype=dtype)  # 2 i - M - 1, i = 1..M; they sum to 0
    pair_sum = 2.0 * jnp.sum(jnp.sort(d, axis=-1) * coefficients, axis=-1)  # all (j, k); j = k adds 0
    return skill - (m - 1 + alpha) / (2.0 * m * m * (m - 1)) * pair_sum


def crps_fair(ensemble: jax.Array, target: jax.Array, member_axis: int = 0) -> jax.Array:
    """Fair CRPS at every point: `afcrps` with alpha = 1 (Ferro 2014; scores `method="fair"`)."""
    return afcrps(ensemble, target, 1.0, member_axis)


def crps_ecdf(ensemble: jax.Array, target: jax.Array, member_axis: int = 0) -> jax.Array:
    """Standard (ecdf) CRPS at every point: `afcrps` with alpha = 0 (Gneiting & Raftery 2007;
    scores `method="ecdf"`, properscoring `crps_ensemble`). M = 1 gives the absolute error."""
    return afcrps(ensemble, target, 0.0, member_axis)


def channel_weights(channels: Sequence[str], variable_weights: Mapping[str, float] | None = None,
                    level_weighting: str = "pressure") -> np.ndarray:
    """Loss weight w_c per channel, float32 (C,), for channels named as `data.names.channel_name`.

        w_c = level_weight(c) * variable_weights.get(variable(c), 1)

    level_weight: "pressure": p_c / mean(p over that variable's levels among `channels`), so a
    variable's level weights average to 1 and, e.g. with levels 250 and 850 hPa, 850 counts 3.4 x as
    much as 250. This is GraphCast's `normalized_level_weights` (level / level.mean(); Lam et al. 2023,
    Science 382, supplement 4.1, "w_j proportional to pressure, normalised to unit mean"). AIFS
    (Lang et al. 2024; anemoi `ReluPressureLevelScaler`) weights max(0.2, p / 1000 hPa): the same
    proportionality up to the 0.2 floor and a per-variable factor. "uniform": 1. Surface channels: 1.

    Counting: `weighted_mean` averages channels, so a variable with L levels carries L channels'
    weight (as in AIFS, where every variable-level is a channel). GraphCast instead averages a
    variable's levels first and sums variables (each variable once); to mimic it give variable v
    the weight 1 / L_v times GraphCast's (which is 1 for 2m_temperature, 0.1 other surface fields).

    Errors (ValueError): duplicate channels, malformed names, an unknown level_weighting, weights for
    variables not among the channels, negative or non-finite weights.
    """
    if level_weighting not in LEVEL_WEIGHTINGS:
        raise ValueError(f"level_weighting {level_weighting!r}: expected one of {LEVEL_WEIGHTINGS}")
    channels = list(channels)
    duplicates = sorted({c for c in channels if channels.count(c) > 1})
    if duplicates:
        raise ValueError(f"channel_weights: duplicate channels {duplicates}")
    variable_weights = dict(variable_weights or {})
    parsed = [names.parse_channel(c) for c in channels]
    extra = sorted(set(variable_weights) - {v for v, _ in parsed})
    if extra:
        raise ValueError(f"variable_weights for {extra}, which are not among the channels' variables")
    bad = {v: w for v, w in variable_weights.items() if not (np.isfinite(w) and w >= 0)}
    if bad:
        raise ValueError(f"variable_weights must be finite and >= 0, got {bad}")
    levels: dict[str, list[int]] = {}
    for variable, level in parsed:
        if level is not None:
            levels.setdefault(variable, []).append(level)
    out = []
    for variable, level in parsed:
        w = 1.0
        if level is not None and level_weighting == "pressure":
            w = level / float(np.mean(levels[variable]))
        out.append(w * float(variable_weights.get(variable, 1.0)))
    return np.asarray(out, np.float32)


def weighted_mean(pointwise: jax.Array, area_weights: jax.Array, channel_weights: jax.Array) -> jax.Array:
    """Scalar weighted mean of pointwise scores (..., C, lat, lon):

        L = mean over the leading dims and over c of  w_c * (1 / (n_lat n_lon)) sum_{i,l} a_i s_{..., c, i, l}

    with a (lat,) the latitude (area) weights, rescaled here to mean 1 (`grid.latitude_weights` already
    are), and w (C,) the channel weights, used as given (not renormalised: with mean-1 channel weights
    L is on the scale of the unweighted mean). Units: those of `pointwise`.
    """
    pointwise = jnp.asarray(pointwise)
    area_weights, channel_weights = jnp.asarray(area_weights), jnp.asarray(channel_weights)
    if pointwise.ndim < 3:
        raise ValueError(f"weighted_mean: pointwise {pointwise.shape} must be (..., channel, lat, lon)")
    c, nlat = pointwise.shape[-3:-1]
    if area_weights.shape != (nlat,) or channel_weights.shape != (c,):
        raise ValueError(f"weighted_mean: pointwise {pointwise.shape} (..., C, lat, lon) needs area_weights "
                         f"({nlat},) and channel_weights ({c},), got {area_weights.shape} and "
                         f"{channel_weights.shape}")
    area = area_weights / jnp.mean(area_weights)
    spatial = jnp.mean(pointwise * area[:, None], axis=(-2, -1))  # (..., C)
    return jnp.mean(spatial * channel_weights)


def ensemble_loss(ensemble: jax.Array, target: jax.Array, area_weights: jax.Array, channel_weights: jax.Array,
                  alpha: float = 0.95, member_axis: int = 0) -> jax.Array:
    """The scalar training loss of an ensemble: weighted_mean(afcrps(ensemble, target, alpha, member_axis)).

    ensemble (..., M at member_axis, ..., C, lat, lon), target the same without the member axis,
    area_weights (lat,), channel_weights (C,) (e.g. `channel_weights(predictor.channels)`).
    """
    return weighted_mean(afcrps(ensemble, target, alpha, member_axis), area_weights, channel_weights)
