"""The band-limited, mass-conserving increment: taper weights by hand, the filter on known
coefficients and on the analysis' null space, and a step that keeps a channel's global mean."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import random_coefficients
from weatherens import grid
from weatherens.model import increment
from weatherens.sphere.sht import SphericalHarmonicTransform
from test_model import LAT, LON, TINY, make_predictor, perturbed, state


def test_taper_weights_by_hand():
    w = increment.taper_weights(10, 3)  # start 7: l = 8, 9, 10 ramp as cos^2(pi/2 * (l - 7) / 4)
    np.testing.assert_allclose(w[:8], 1.0)
    np.testing.assert_allclose(w[8:], [np.cos(np.pi / 8) ** 2, 0.5, np.cos(3 * np.pi / 8) ** 2], rtol=1e-12)
    np.testing.assert_array_equal(increment.taper_weights(5, 0), np.ones(6))


def test_filter_scales_each_degree_and_drops_the_rest():
    full = SphericalHarmonicTransform(LAT, LON.size)  # T31 on 64 x 32
    coeffs = random_coefficients(full.lmax, seed=3)
    field = full.synthesis(jnp.asarray(coeffs, jnp.complex64))
    filtered = increment.IncrementFilter(LAT, LON.size, lmax=20, taper=4)(field)
    expected = np.zeros_like(coeffs)
    expected[:21] = coeffs[:21] * increment.taper_weights(20, 4)[:, None]
    np.testing.assert_allclose(full.analysis(filtered), expected, atol=2e-5 * np.abs(coeffs).max())


def test_filter_removes_what_the_analysis_cannot_see():
    i, j = np.meshgrid(np.arange(LAT.size), np.arange(LON.size), indexing="ij")
    checkerboard = jnp.asarray((-1.0) ** (i + j), jnp.float32)  # zonal wavenumber 32: beyond T31
    sht = SphericalHarmonicTransform(LAT, LON.size)
    assert float(jnp.abs(sht.analysis(checkerboard)).max()) < 1e-5  # invisible to the analysis
    filtered = increment.IncrementFilter(LAT, LON.size, lmax=sht.lmax, taper=0)(checkerboard)
    assert float(jnp.abs(filtered).max()) < 1e-5


def test_keep_global_means_restores_the_chosen_channels_only():
    x_now, x_next = state(0), state(1)
    kept = increment.keep_global_means(x_next, x_now, np.array([0, 2]), LAT)
    means = grid.area_mean(np.asarray(kept, np.float64), LAT)
    np.testing.assert_allclose(means[[0, 2]], grid.area_mean(np.asarray(x_now, np.float64), LAT)[[0, 2]], rtol=1e-6)
    np.testing.assert_array_equal(kept[1], x_next[1])
    np.testing.assert_allclose(kept[0] - x_next[0], (kept[0] - x_next[0])[0, 0], atol=1e-2)  # a constant shift


@pytest.mark.slow
def test_step_increment_is_band_limited_and_conserves_the_mean():
    cfg = dataclasses.replace(TINY, lmax=0, increment_lmax=12, increment_taper=3, conserve_global_mean=("2m_temperature",))
    p = make_predictor(cfg)
    params = perturbed(p.init_params(jax.random.key(0)), jax.random.key(5))
    f = jnp.full((1, 32, 64), 600.0)
    key = jax.random.key(2)
    x_next, _ = jax.jit(p.step)(params, state(0), state(1), f, f, key, p.initial_noise(key))
    delta = np.asarray(x_next, np.float64) - np.asarray(state(1), np.float64)
    sht = SphericalHarmonicTransform(LAT, LON.size)
    power = np.asarray(sht.power_spectrum(jnp.asarray(delta[:2], jnp.float32)))
    assert power[:, :13].sum() > 0 and np.all(power[:, 13:] < 1e-9 * power.sum(axis=1, keepdims=True))
    assert abs(grid.area_mean(delta[2], LAT)) < 1e-3 * np.sqrt(grid.area_mean(delta[2] ** 2, LAT))
    unfiltered = make_predictor(dataclasses.replace(TINY, lmax=0))
    raw, _ = jax.jit(unfiltered.step)(params, state(0), state(1), f, f, key, unfiltered.initial_noise(key))
    raw_delta = np.asarray(raw, np.float64) - np.asarray(state(1), np.float64)
    assert np.abs(raw_delta - delta).max() > 1e-3 * np.abs(raw_delta).max()  # the filter does something


def test_unknown_conserved_channel_is_refused():
    with pytest.raises(ValueError, match="surface_pressure"):
        make_predictor(dataclasses.replace(TINY, conserve_global_mean=("surface_pressure",)))
