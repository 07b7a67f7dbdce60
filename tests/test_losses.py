"""afCRPS: hand values, brute force, scores, limits, gradients; channel and area weights."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from scores.probability import crps_for_ensemble

from weatherens import grid
from weatherens.train import losses


def brute(x, y, alpha):
    m = len(x)
    skill = sum(abs(a - y) for a in x) / m
    pairs = sum(abs(a - b) for a, b in itertools.permutations(x, 2))
    return skill - (m - 1 + alpha) / (2 * m * m * (m - 1)) * pairs


def test_hand_values():
    x, y = jnp.array([1.0, 2.0, 4.0]), jnp.array(3.0)
    # skill (2 + 1 + 1) / 3 = 4/3; pairs over j != k: 2 (1 + 3 + 2) = 12
    assert float(losses.crps_fair(x, y)) == pytest.approx(4 / 3 - 12 / (2 * 3 * 2))  # 1/3
    assert float(losses.crps_ecdf(x, y)) == pytest.approx(4 / 3 - 12 / (2 * 9))  # 2/3
    assert float(losses.afcrps(x, y, 0.95)) == pytest.approx(4 / 3 - (2 + 0.95) * 12 / (2 * 9 * 2))


@pytest.mark.parametrize("m", [2, 3, 7])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.95, 1.0])
def test_brute_force(m, alpha):
    rng = np.random.default_rng(m)
    x, y = rng.standard_normal((m, 5)), rng.standard_normal(5)
    got = losses.afcrps(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), alpha)
    np.testing.assert_allclose(got, [brute(x[:, i], y[i], alpha) for i in range(5)], rtol=1e-5, atol=1e-6)


def test_agrees_with_scores():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 6, 10)), rng.standard_normal((6, 10))
    fc = xr.DataArray(x, dims=("ens", "a", "b"))
    obs = xr.DataArray(y, dims=("a", "b"))
    for alpha, method in ((1.0, "fair"), (0.0, "ecdf")):
        ref = crps_for_ensemble(fc, obs, "ens", method=method, preserve_dims="all")
        got = losses.afcrps(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), alpha)
        np.testing.assert_allclose(got, ref.transpose("a", "b").values, rtol=1e-5, atol=1e-6)


def test_one_member_is_the_absolute_error_and_needs_alpha_zero():
    np.testing.assert_allclose(losses.afcrps(jnp.array([[2.5]]), jnp.array([1.0]), alpha=0.0), [1.5])
    with pytest.raises(ValueError, match="at least 2"):
        losses.afcrps(jnp.array([[2.5]]), jnp.array([1.0]), alpha=0.95)
    with pytest.raises(ValueError, match="does not match"):
        losses.afcrps(jnp.ones((3, 4)), jnp.ones(5))


def test_member_axis_order_and_gradients():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 3, 5)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((4, 5)), jnp.float32)
    a = losses.afcrps(x, y, 0.95, member_axis=1)
    b = losses.afcrps(jnp.moveaxis(x, 1, 0)[::-1], y, 0.95)  # members first, reversed
    np.testing.assert_allclose(a, b, rtol=1e-6)
    loss = lambda e: losses.afcrps(e, y, 0.95, member_axis=1).sum()  # noqa: E731
    g = jax.grad(loss)(x)
    eps = 1e-3
    d = jnp.zeros_like(x).at[2, 1, 3].set(eps)
    fd = (loss(x + d) - loss(x - d)) / (2 * eps)
    np.testing.assert_allclose(g[2, 1, 3], fd, rtol=1e-2)
    tied = jax.grad(lambda e: losses.afcrps(e, jnp.zeros(()), 1.0).sum())(jnp.ones(3))
    assert np.all(np.isfinite(tied))


def test_spread_incentive_of_the_fair_score():
    """For members drawn from the truth's distribution, the fair CRPS is (on average) lower than for a
    collapsed ensemble at the mean, and does not depend on M (unbiased)."""
    rng = np.random.default_rng(2)
    y = rng.standard_normal(20000)
    expected = {}
    for m in (2, 8):
        x = rng.standard_normal((m, 20000))
        expected[m] = float(losses.crps_fair(jnp.asarray(x), jnp.asarray(y)).mean())
    collapsed = float(losses.crps_fair(jnp.zeros((2, 20000)) + 1e-6 * jnp.arange(2)[:, None], jnp.asarray(y)).mean())
    assert abs(expected[2] - expected[8]) < 0.02
    # E CRPS(N(0,1), y ~ N(0,1)) = E|X - Y| - E|X - X'| / 2 = 2/sqrt(pi) - 1/sqrt(pi)
    assert abs(expected[8] - 1 / np.sqrt(np.pi)) < 0.02
    assert collapsed > expected[2]


def test_channel_weights():
    channels = ["geopotential@250", "geopotential@850", "temperature@500", "2m_temperature"]
    w = losses.channel_weights(channels, {"2m_temperature": 0.5})
    np.testing.assert_allclose(w, [250 / 550, 850 / 550, 1.0, 0.5])
    np.testing.assert_allclose(losses.channel_weights(channels, level_weighting="uniform"), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="not among"):
        losses.channel_weights(channels, {"humidity": 2.0})
    with pytest.raises(ValueError, match="level_weighting"):
        losses.channel_weights(channels, level_weighting="log")


def test_weighted_mean_matches_numpy():
    rng = np.random.default_rng(3)
    lat = grid.equiangular_latitudes(8)
    x = rng.random((2, 3, 8, 16))
    cw = np.array([1.0, 2.0, 0.5])
    w = grid.latitude_weights(lat)
    want = np.mean([[cw[c] * np.sum(x[b, c] * w[:, None]) / (w.sum() * 16) for c in range(3)] for b in range(2)])
    got = losses.weighted_mean(jnp.asarray(x), jnp.asarray(w), jnp.asarray(cw))
    np.testing.assert_allclose(got, want, rtol=1e-5)
