"""afCRPS training losses: hand values, brute force, scores, limits, gradients, jit/vmap; channel and area weights."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from scores.probability import crps_for_ensemble

from weatherens import grid
from weatherens.data import names
from weatherens.train import losses

# jitted once per shape, alpha traced: eager JAX compiles every primitive per new shape (slow tests)
afcrps = jax.jit(losses.afcrps, static_argnames=("member_axis",))


def brute(x, y, alpha):
    """O(M^2) afCRPS of one point, straight from the definition (python floats)."""
    m = len(x)
    skill = sum(abs(a - y) for a in x) / m
    pairs = sum(abs(a - b) for a, b in itertools.permutations(x, 2))  # j != k
    return skill - (m - 1 + alpha) / (2 * m * m * (m - 1)) * pairs


def brute_numpy(x, y, alpha):
    """O(M^2) afCRPS with the members x (M, n) on axis 0, float64, via the members x members matrix."""
    m = x.shape[0]
    skill = np.abs(x - y).mean(axis=0)
    pairs = np.abs(x[:, None] - x[None, :]).sum(axis=(0, 1))
    return skill - (m - 1 + alpha) / (2 * m * m * (m - 1)) * pairs


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("alpha, expected", [
    # members [1, 2, 4], truth 3:
    #   skill = (|1-3| + |2-3| + |4-3|) / 3 = (2 + 1 + 1) / 3 = 4/3
    #   sum_{j != k} |x_j - x_k| = 2 (|1-2| + |1-4| + |2-4|) = 2 (1 + 3 + 2) = 12
    #   afCRPS = 4/3 - (M - 1 + alpha) / (2 M^2 (M - 1)) * 12 = 4/3 - (2 + alpha) * 12 / 36
    (1.0, 4 / 3 - 3 * 12 / 36),     # fair: 4/3 - 1 = 1/3
    (0.0, 4 / 3 - 2 * 12 / 36),     # ecdf: 4/3 - 2/3 = 2/3
    (0.95, 4 / 3 - 2.95 * 12 / 36),  # AIFS: 4/3 - 0.9833... = 0.35
    (0.5, 4 / 3 - 2.5 * 12 / 36),   # 4/3 - 5/6 = 1/2
])
def test_hand_values(alpha, expected):
    x, y = jnp.array([1.0, 2.0, 4.0]), jnp.array(3.0)
    assert float(losses.afcrps(x, y, alpha)) == pytest.approx(expected, rel=1e-6)
    assert float(afcrps(x, y, alpha)) == pytest.approx(brute([1, 2, 4], 3, alpha), rel=1e-6)


def test_aliases_and_convex_combination():
    fair, ecdf = jax.jit(losses.crps_fair), jax.jit(losses.crps_ecdf)
    assert float(fair(jnp.array([1.0, 2.0, 4.0]), jnp.array(3.0))) == pytest.approx(1 / 3)
    assert float(ecdf(jnp.array([1.0, 2.0, 4.0]), jnp.array(3.0))) == pytest.approx(2 / 3)
    # (M - 1 + alpha) = alpha M + (1 - alpha)(M - 1): afCRPS_alpha = alpha fair + (1 - alpha) ecdf
    rng = np.random.default_rng(4)
    x, y = jnp.asarray(rng.standard_normal((5, 7)), jnp.float32), jnp.asarray(rng.standard_normal(7), jnp.float32)
    combo = 0.3 * fair(x, y) + 0.7 * ecdf(x, y)
    np.testing.assert_allclose(afcrps(x, y, 0.3), combo, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("m", [2, 3, 7])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.95, 1.0])
def test_brute_force(m, alpha):
    rng = np.random.default_rng(m)
    x, y = rng.standard_normal((m, 5)), rng.standard_normal(5)
    x[1, 0] = x[0, 0]  # a tie
    got = afcrps(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), alpha)
    np.testing.assert_allclose(got, [brute(x[:, i], y[i], alpha) for i in range(5)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.95, 1.0])
def test_large_ensemble_against_the_pair_matrix(alpha):
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((500, 4)), rng.standard_normal(4)
    with jax.enable_x64(True):
        got = np.asarray(afcrps(jnp.asarray(x), jnp.asarray(y), alpha))
    np.testing.assert_allclose(got, brute_numpy(x, y, alpha), rtol=1e-10)
    got32 = afcrps(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), alpha)
    np.testing.assert_allclose(got32, brute_numpy(x, y, alpha), rtol=2e-5)


def test_agrees_with_scores():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 6, 10)), rng.standard_normal((6, 10))
    fc = xr.DataArray(x, dims=("ens", "a", "b"))
    obs = xr.DataArray(y, dims=("a", "b"))
    for alpha, method in ((1.0, "fair"), (0.0, "ecdf")):
        ref = crps_for_ensemble(fc, obs, "ens", method=method, preserve_dims="all").transpose("a", "b").values
        with jax.enable_x64(True):
            got64 = afcrps(jnp.asarray(x), jnp.asarray(y), alpha)
            assert got64.dtype == jnp.float64
            np.testing.assert_allclose(got64, ref, rtol=1e-12, atol=1e-14)
        got32 = afcrps(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), alpha)
        np.testing.assert_allclose(got32, ref, rtol=1e-5, atol=1e-6)


def test_float32_accuracy_far_from_zero():
    """Geopotential-like values (2e5 m^2 s^-2, spread 30): sorting x - y, not x, keeps float32 accurate."""
    rng = np.random.default_rng(6)
    x32 = (2e5 + 30 * rng.standard_normal((16, 50))).astype(np.float32)
    y32 = (2e5 + 30 * rng.standard_normal(50)).astype(np.float32)
    want = brute_numpy(x32.astype(np.float64), y32.astype(np.float64), 0.95)
    np.testing.assert_allclose(afcrps(jnp.asarray(x32), jnp.asarray(y32), 0.95), want, rtol=1e-5)


def test_one_member_is_the_absolute_error():
    # |2.5 - 1| = 1.5, |-1 - 1| = 2
    np.testing.assert_allclose(losses.afcrps(jnp.array([[2.5, -1.0]]), jnp.array([1.0, 1.0]), alpha=0.0), [1.5, 2.0])
    np.testing.assert_allclose(losses.crps_ecdf(jnp.array([[2.5]]), jnp.array([1.0])), [1.5])


def test_errors():
    with pytest.raises(ValueError, match="at least 2"):
        losses.afcrps(jnp.array([[2.5]]), jnp.array([1.0]), alpha=0.95)
    with pytest.raises(ValueError, match="at least 2"):
        losses.crps_fair(jnp.array([[2.5]]), jnp.array([1.0]))
    with pytest.raises(ValueError, match="does not match"):
        losses.afcrps(jnp.ones((3, 4)), jnp.ones(5))
    with pytest.raises(ValueError, match="outside"):
        losses.afcrps(jnp.ones((3, 4)), jnp.ones(4), alpha=1.5)
    with pytest.raises(ValueError, match="member_axis"):
        losses.afcrps(jnp.ones((3, 4)), jnp.ones(4), member_axis=2)


def test_dtype():
    x, y = jnp.ones((3, 4), jnp.bfloat16), jnp.zeros(4, jnp.bfloat16)
    assert losses.afcrps(x, y).dtype == jnp.float32  # low precision is scored in float32
    assert losses.afcrps(x.astype(jnp.float32), y.astype(jnp.float32)).dtype == jnp.float32


# ----------------------------------------------------------------------------- axes, order, transforms


def test_member_axis_and_order():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 3, 5)), jnp.float32)  # members on axis 1
    y = jnp.asarray(rng.standard_normal((4, 5)), jnp.float32)
    first = jnp.moveaxis(x, 1, 0)
    want = afcrps(first, y, 0.95)
    np.testing.assert_allclose(afcrps(x, y, 0.95, member_axis=1), want, rtol=1e-6)
    np.testing.assert_allclose(afcrps(x, y, 0.95, member_axis=-2), want, rtol=1e-6)
    np.testing.assert_allclose(afcrps(jnp.moveaxis(x, 1, -1), y, 0.95, member_axis=-1), want, rtol=1e-6)
    permuted = first[rng.permutation(3)]
    np.testing.assert_allclose(afcrps(permuted, y, 0.95), want, rtol=1e-6)


def test_jit_and_vmap():
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((6, 4, 9)), jnp.float32)  # (batch, M, n)
    y = jnp.asarray(rng.standard_normal((6, 9)), jnp.float32)
    want = afcrps(x, y, 0.95, member_axis=1)
    jitted = jax.jit(functools.partial(losses.afcrps, alpha=0.95, member_axis=1))
    np.testing.assert_allclose(jitted(x, y), want, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda e, t: losses.afcrps(e, t, 0.95))(x, y), want, rtol=1e-6)
    traced_alpha = jax.jit(lambda e, t, a: losses.afcrps(e, t, a, member_axis=1))(x, y, 0.95)
    np.testing.assert_allclose(traced_alpha, want, rtol=1e-6)


# ----------------------------------------------------------------------------- gradients


def test_gradient_hand_values():
    # fair, members [1, 2, 4], truth 3: d skill / d x_j = sign(x_j - y) / 3 = (-1, -1, 1) / 3;
    # d pairs / d x_(i) = 2 (2i - M - 1) = (-4, 0, 4), times 3 / 36 = (-1/3, 0, 1/3):
    # grad = (-1/3 + 1/3, -1/3 - 0, 1/3 - 1/3) = (0, -1/3, 0); d / dy = -(-1 - 1 + 1) / 3 = 1/3
    gx, gy = jax.jit(jax.grad(losses.crps_fair, argnums=(0, 1)))(jnp.array([1.0, 2.0, 4.0]), jnp.array(3.0))
    np.testing.assert_allclose(gx, [0.0, -1 / 3, 0.0], atol=1e-7)
    assert float(gy) == pytest.approx(1 / 3)


def test_gradient_matches_finite_differences():
    """Central differences in float64 for every ensemble and target entry, at three alphas (traced)."""
    rng = np.random.default_rng(8)
    eps = 1e-6
    with jax.enable_x64(True):
        x, y = jnp.asarray(rng.standard_normal((5, 3))), jnp.asarray(rng.standard_normal(3))
        loss = lambda e, t, a: jnp.sum(losses.afcrps(e, t, a) * jnp.arange(1.0, 4.0))
        grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
        steps_x = eps * jnp.eye(15).reshape(15, 5, 3)
        steps_y = eps * jnp.eye(3)
        central_x = jax.jit(jax.vmap(lambda d, a: (loss(x + d, y, a) - loss(x - d, y, a)) / (2 * eps), (0, None)))
        central_y = jax.jit(jax.vmap(lambda d, a: (loss(x, y + d, a) - loss(x, y - d, a)) / (2 * eps), (0, None)))
        for alpha in (0.0, 0.95, 1.0):
            gx, gy = grad(x, y, alpha)
            np.testing.assert_allclose(np.ravel(gx), central_x(steps_x, alpha), rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(gy, central_y(steps_y, alpha), rtol=1e-6, atol=1e-8)


def test_gradient_at_ties_is_finite():
    """At ties jnp.sort and |.| give a one-sided derivative (sort breaks ties by position, d|d|/dd = 1
    at 0): finite, never NaN, and still translation invariant: sum_j dL/dx_j + dL/dy = 0."""
    members = jnp.array([[1.0, 1.0, 1.0], [0.0, 2.0, 2.0], [3.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    truth = jnp.array([1.0, 2.0, 0.0, 0.0])
    grad = jax.jit(jax.grad(lambda e, t, a: losses.afcrps(e, t, a, member_axis=1).sum(), argnums=(0, 1)))
    for alpha in (0.0, 0.95, 1.0):
        gx, gy = grad(members, truth, alpha)
        assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
        np.testing.assert_allclose(gx.sum(axis=1) + gy, 0.0, atol=1e-6)


def test_spread_incentive_of_the_fair_score():
    """Members drawn from the truth's distribution: the fair CRPS does not depend on M (unbiased),
    equals the CRPS of N(0, 1) against y ~ N(0, 1), and beats a collapsed ensemble."""
    rng = np.random.default_rng(2)
    y = jnp.asarray(rng.standard_normal(20000), jnp.float32)
    expected = {}
    for m in (2, 8):
        x = jnp.asarray(rng.standard_normal((m, 20000)), jnp.float32)
        expected[m] = float(afcrps(x, y, 1.0).mean())
    collapsed = float(afcrps(jnp.zeros((2, 20000)) + 1e-6 * jnp.arange(2)[:, None], y, 1.0).mean())
    assert abs(expected[2] - expected[8]) < 0.02
    # E CRPS(N(0,1), y ~ N(0,1)) = E|X - Y| - E|X - X'| / 2 = 2/sqrt(pi) - 1/sqrt(pi)
    assert abs(expected[8] - 1 / np.sqrt(np.pi)) < 0.02
    assert collapsed > expected[2]


# ----------------------------------------------------------------------------- weights


def test_parse_channel_inverts_channel_name():
    for variable, level in (("temperature", 850), ("geopotential", 50), ("2m_temperature", None)):
        assert names.parse_channel(names.channel_name(variable, level)) == (variable, level)
    for bad in ("temperature@", "temperature@85.5", "@500", "temperature@0"):
        with pytest.raises(ValueError, match="positive integer level"):
            names.parse_channel(bad)


def test_channel_weights():
    channels = ["geopotential@250", "geopotential@500", "geopotential@850", "temperature@500",
                "temperature@850", "2m_temperature", "10m_u_component_of_wind"]
    w = losses.channel_weights(channels, {"temperature": 2.0, "10m_u_component_of_wind": 0.1})
    assert w.dtype == np.float32
    # geopotential: mean level (250 + 500 + 850) / 3 = 1600/3 -> 250 * 3/1600, 500 * 3/1600, 850 * 3/1600
    # temperature: mean level (500 + 850) / 2 = 675 -> 2 * 500/675, 2 * 850/675; surface: 1 and 0.1
    want = [0.46875, 0.9375, 1.59375, 2 * 500 / 675, 2 * 850 / 675, 1.0, 0.1]
    np.testing.assert_allclose(w, want, rtol=1e-6)
    assert np.mean(w[:3]) == pytest.approx(1.0)  # a variable's level weights average to 1
    uniform = losses.channel_weights(channels, level_weighting="uniform")
    np.testing.assert_array_equal(uniform, np.ones(7))
    assert losses.channel_weights([]).shape == (0,)


def test_channel_weights_errors():
    channels = ["geopotential@250", "geopotential@850", "2m_temperature"]
    with pytest.raises(ValueError, match="not among"):
        losses.channel_weights(channels, {"humidity": 2.0})
    with pytest.raises(ValueError, match="level_weighting"):
        losses.channel_weights(channels, level_weighting="log")
    with pytest.raises(ValueError, match="duplicate"):
        losses.channel_weights(channels + ["geopotential@850"])
    with pytest.raises(ValueError, match="finite and >= 0"):
        losses.channel_weights(channels, {"geopotential": -1.0})


def test_weighted_mean_matches_numpy():
    rng = np.random.default_rng(3)
    lat = grid.equiangular_latitudes(8)
    x = rng.random((2, 3, 8, 16))
    cw = np.array([1.0, 2.0, 0.5])
    a = grid.latitude_weights(lat)  # mean 1
    want = np.mean([[cw[c] * np.sum(x[b, c] * a[:, None]) / (8 * 16) for c in range(3)] for b in range(2)])
    got = losses.weighted_mean(jnp.asarray(x), jnp.asarray(a), jnp.asarray(cw))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # area weights are rescaled to mean 1: cell-area fractions (sum 1) give the same loss
    got_frac = losses.weighted_mean(jnp.asarray(x), jnp.asarray(grid.cell_area_fractions(lat)), jnp.asarray(cw))
    np.testing.assert_allclose(got_frac, want, rtol=1e-5)
    # a constant field has loss mean(cw) * constant whatever the area weights
    const = losses.weighted_mean(jnp.full((3, 8, 16), 2.0), jnp.asarray(a), jnp.asarray(cw))
    assert float(const) == pytest.approx(2.0 * cw.mean(), rel=1e-6)
    with pytest.raises(ValueError, match="area_weights"):
        losses.weighted_mean(jnp.asarray(x), jnp.ones(16), jnp.asarray(cw))
    with pytest.raises(ValueError, match="channel_weights"):
        losses.weighted_mean(jnp.asarray(x), jnp.asarray(a), jnp.ones(2))


def test_ensemble_loss_composes_and_differentiates_under_jit():
    rng = np.random.default_rng(9)
    lat = grid.equiangular_latitudes(4)
    channels = ["geopotential@500", "geopotential@850", "2m_temperature"]
    a, cw = jnp.asarray(grid.latitude_weights(lat), jnp.float32), jnp.asarray(losses.channel_weights(channels))
    ens = jnp.asarray(rng.standard_normal((2, 4, 3, 4, 8)), jnp.float32)  # (steps, M, C, lat, lon)
    tgt = jnp.asarray(rng.standard_normal((2, 3, 4, 8)), jnp.float32)
    want = losses.weighted_mean(afcrps(ens, tgt, 0.95, member_axis=1), a, cw)
    loss_fn = jax.jit(functools.partial(losses.ensemble_loss, alpha=0.95, member_axis=1))
    value, grad = jax.value_and_grad(loss_fn)(ens, tgt, a, cw)
    assert float(value) == pytest.approx(float(want), rel=1e-6)
    assert grad.shape == ens.shape and np.all(np.isfinite(grad))
