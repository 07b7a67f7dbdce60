"""Grid weights and the area mean (weatherens.grid), against hand-worked values."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from weatherens import grid


def test_two_band_grid_weights_by_hand():
    # latitudes -45 and 45: bands -90..0 and 0..90, each half the sphere
    np.testing.assert_allclose(grid.cell_area_fractions(np.array([-45.0, 45.0])), [0.5, 0.5])
    # -60, 0, 60: edges -90, -30, 30, 90; areas (sin -30 - sin -90)/2 = 0.25, (sin 30 - sin -30)/2 = 0.5
    np.testing.assert_allclose(grid.cell_area_fractions(np.array([-60.0, 0.0, 60.0])), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(grid.latitude_weights(np.array([-60.0, 0.0, 60.0])), [0.75, 1.5, 0.75])


def test_weights_follow_the_latitudes_in_any_order():
    lat = grid.equiangular_latitudes(32)
    w = grid.latitude_weights(lat)
    np.testing.assert_array_equal(grid.latitude_weights(lat[::-1]), w[::-1])
    shuffle = np.random.default_rng(0).permutation(32)
    np.testing.assert_array_equal(grid.latitude_weights(lat[shuffle]), w[shuffle])


def test_area_mean_by_hand_with_mask_and_in_jax():
    lat = np.array([-60.0, 0.0, 60.0])
    x = np.array([[1.0, 3.0], [2.0, 2.0], [4.0, 0.0]])  # zonal means 2, 2, 2 -> mean 2
    assert grid.area_mean(x, lat) == 2.0
    y = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])  # only the middle band: weight 0.5 of the sphere
    assert grid.area_mean(y, lat) == 0.5
    assert grid.area_mean(y, lat, mask=lat >= 0) == 1.5 / 2.25  # rows 0 and 60 (weights 1.5, 0.75): 1.5 / 2.25
    stacked = np.stack([x, y])
    np.testing.assert_allclose(np.asarray(grid.area_mean(jnp.asarray(stacked, jnp.float32), lat)), [2.0, 0.5], rtol=1e-6)
