"""The CRPS family as training losses, in JAX (differentiable, float32, jit/vmap-able).

    afCRPS_alpha = 1/M sum_j |x_j - y|  -  (M - 1 + alpha) / (2 M^2 (M - 1)) sum_{j != k} |x_j - x_k|

the almost-fair CRPS of AIFS-CRPS (Lang et al. 2024, arXiv:2412.15832, eq. 4): alpha = 1 is the
fair CRPS (Ferro 2014), unbiased for the CRPS of the distribution the members come from, alpha = 0
the standard CRPS of the members' empirical CDF (Gneiting & Raftery 2007). alpha slightly below 1
(AIFS: 0.95) keeps the fair score's spread incentive while avoiding the fair CRPS's degenerate
minimisers when M is small (members collapsing on each other but one).

The pair sum is O(M log M) from the sorted members x_(1) <= ... <= x_(M):
    sum_{j,k} |x_j - x_k| = 2 sum_i (2 i - M - 1) x_(i)
(jnp.sort is differentiable; the same identity as `weatherens.verify.metrics`), so the memory is
that of the ensemble, never members x members.

Weights: latitude (cell-area) weights of mean 1 (`grid.latitude_weights`, as WeatherBench 2) and
per-channel weights (`channel_weights`), pressure-proportional over a variable's levels as GraphCast
(Lam et al. 2023, Science, supplement 4.1) and AIFS weight their losses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def afcrps(ensemble: jax.Array, target: jax.Array, alpha: float = 0.95, member_axis: int = 0) -> jax.Array:
    """afCRPS at every point.

    Args:
      ensemble: (..., M, ...) with the M members at `member_axis`.
      target: the ensemble's shape without the member axis.
      alpha: 1 fair, 0 standard (ecdf); M = 1 is allowed only with alpha = 0 (the absolute error).

    Returns: target's shape, the ensemble's dtype.
    """
    x = jnp.moveaxis(ensemble, member_axis, -1)
    m = x.shape[-1]
    if m < 2 and alpha != 0:
        raise ValueError(f"afcrps: {m} member(s); the (almost-)fair CRPS needs at least 2 (or alpha = 0)")
    if x.shape[:-1] != jnp.shape(target):
        raise ValueError(f"afcrps: ensemble {ensemble.shape} (members on axis {member_axis}) does not match "
                         f"target {jnp.shape(target)}")
    skill = jnp.abs(x - target[..., None]).mean(axis=-1)
    if m == 1:
        return skill
    coefficients = jnp.arange(1 - m, m, 2, dtype=x.dtype)  # 2 i - M - 1, i = 1..M
    pair_sum = 2.0 * jnp.sum(jnp.sort(x, axis=-1) * coefficients, axis=-1)  # sum over all (j, k); j = k adds 0
    return skill - (m - 1 + alpha) / (2.0 * m * m * (m - 1)) * pair_sum


def crps_fair(ensemble: jax.Array, target: jax.Array, member_axis: int = 0) -> jax.Array:
    """Fair CRPS at every point: `afcrps` with alpha = 1 (Ferro 2014)."""
    return afcrps(ensemble, target, 1.0, member_axis)


def crps_ecdf(ensemble: jax.Array, target: jax.Array, member_axis: int = 0) -> jax.Array:
    """Standard (ecdf) CRPS at every point: `afcrps` with alpha = 0 (Gneiting & Raftery 2007)."""
    return afcrps(ensemble, target, 0.0, member_axis)


def parse_channel(name: str) -> tuple[str, int | None]:
    """'temperature@850' -> ('temperature', 850); '2m_temperature' -> ('2m_temperature', None)."""
    variable, sep, level = name.partition("@")
    return variable, (int(level) if sep else None)


def channel_weights(channels: Sequence[str], variable_weights: Mapping[str, float] | None = None,
                    level_weighting: str = "pressure") -> np.ndarray:
    """Loss weight per channel, float32 (C,).

    Levels of a variable: "pressure" weights level p by p / mean(p over the variable's levels), so
    the weights over a variable's levels average to 1 and 850 hPa counts 3.4 x as much as 250 hPa
    (GraphCast's pressure-proportional weights, AIFS); "uniform": 1. Surface channels: 1. Each is
    then multiplied by variable_weights[variable] (default 1).
    """
    if level_weighting not in ("pressure", "uniform"):
        raise ValueError(f"level_weighting {level_weighting!r}: expected 'pressure' or 'uniform'")
    parsed = [parse_channel(c) for c in channels]
    levels: dict[str, list[int]] = {}
    for variable, level in parsed:
        if level is not None:
            levels.setdefault(variable, []).append(level)
    extra = sorted(set(variable_weights or {}) - {v for v, _ in parsed})
    if extra:
        raise ValueError(f"variable_weights for {extra}, which are not among the channels' variables")
    out = []
    for variable, level in parsed:
        w = 1.0
        if level is not None and level_weighting == "pressure":
            w = level / float(np.mean(levels[variable]))
        out.append(w * float((variable_weights or {}).get(variable, 1.0)))
    return np.asarray(out, np.float32)


def weighted_mean(pointwise: jax.Array, area_weights: jax.Array, channel_weights: jax.Array) -> jax.Array:
    """Scalar mean of pointwise (..., C, lat, lon): 1/C sum_c w_c <x_c>, with <.> the latitude-weighted
    spatial mean (area_weights (lat,), mean 1) also averaged over the leading dims."""
    area = area_weights / jnp.mean(area_weights)
    spatial = jnp.mean(pointwise * area[:, None], axis=(-2, -1))  # (..., C)
    return jnp.mean(spatial * channel_weights)


def ensemble_loss(ensemble: jax.Array, target: jax.Array, area_weights: jax.Array, channel_weights: jax.Array,
                  alpha: float = 0.95, member_axis: int = 0) -> jax.Array:
    """weighted_mean(afcrps(ensemble, target, alpha)) : the scalar training loss of one ensemble."""
    return weighted_mean(afcrps(ensemble, target, alpha, member_axis), area_weights, channel_weights)
