"""The analysis-error perturbation sampler: rotation in longitude, mean zero, the sample's spectrum."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from dinosaur import spherical_harmonic

from weatherens.world import initial_uncertainty as iu
from weatherens.world import model as world

pytestmark = pytest.mark.slow  # builds a world


@pytest.fixture(scope="module")
def t21():
    return spherical_harmonic.Grid.T21()


def test_rotation_in_longitude_is_a_shift_of_the_grid_columns(t21):
    rng = np.random.default_rng(0)
    nodal = t21.to_nodal(t21.to_modal(rng.standard_normal(t21.nodal_shape)))  # band-limited, (lon, lat)
    modal = t21.to_modal(nodal)
    for k in (1, 5, 17):
        rotated = t21.to_nodal(iu.rotate(modal, 2 * np.pi * k / t21.nodal_shape[0]))
        np.testing.assert_allclose(rotated, np.roll(nodal, k, axis=0), atol=2e-5 * np.abs(nodal).max())
    np.testing.assert_allclose(iu.degree_power(iu.rotate(modal, 0.7)), iu.degree_power(modal), rtol=1e-5)


def _synthetic_errors(grid, cases: int, layers: int, seed: int) -> iu.ErrorSample:
    """K error cases with a red spectrum, a different amplitude per field and layer, and structure in m."""
    rng = np.random.default_rng(seed)
    m, l = grid.modal_axes
    shape = grid.modal_shape
    envelope = np.where(np.abs(m)[:, None] <= l[None, :], 1.0 / (1.0 + l[None, :]) * (1 + 0.5 * (m[:, None] > 0)), 0.0)
    fields = {}
    for i, f in enumerate(world.STATE_FIELDS):
        n = 1 if f == "log_surface_pressure" else layers
        x = rng.standard_normal((cases, n) + shape) * envelope * (i + 1) * np.arange(1, n + 1)[:, None, None]
        fields[f] = (x - x.mean(0)).astype(np.float32)
    zero = {f: np.zeros_like(v[0]) for f, v in fields.items()}
    return iu.ErrorSample(np.arange(cases).astype("datetime64[D]"), iu._state(zero), iu._state(fields))


def test_perturbations_have_mean_zero_and_the_samples_spectrum(t21):
    """Over 4,000 draws: the mean is zero to sampling error, and the mean power per degree, field and
    layer is scale^2 times the sample's (ddof 1), to a few % (the estimate's s.e. is ~1/sqrt(4000 (2l+1)))."""
    errors = _synthetic_errors(t21, cases=6, layers=3, seed=1)
    draws = iu.perturbations(errors, jax.random.key(5), np.arange(4000), scale=0.5)
    for f in world.STATE_FIELDS:
        x = np.asarray(getattr(draws, f), np.float64)  # (N, layers, m, l)
        a = np.asarray(getattr(errors.anomalies, f), np.float64)
        sd = x.std(0)
        assert np.all(np.abs(x.mean(0)) <= 5 * sd / np.sqrt(len(x)) + 1e-12), f
        got = iu.degree_power(x).mean(0)  # (layers, l)
        want = 0.25 * iu.degree_power(a).sum(0) / (len(a) - 1)
        np.testing.assert_allclose(got, want, rtol=0.1, err_msg=f)
        np.testing.assert_allclose(got.sum(-1), want.sum(-1), rtol=0.03, err_msg=f)


def test_member_draws_depend_on_key_and_id_alone(t21):
    errors = _synthetic_errors(t21, cases=4, layers=2, seed=2)
    key = jax.random.key(9)
    a = iu.perturbations(errors, key, [0, 1, 2], 1.0).vorticity
    b = iu.perturbations(errors, key, [2, 7], 1.0).vorticity
    np.testing.assert_array_equal(np.asarray(a[2]), np.asarray(b[0]))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))
    zero = iu.perturbations(errors, key, [0], 0.0).vorticity
    assert not np.asarray(zero).any()


def test_add_truncates_a_perturbation_to_a_coarser_state(t21):
    errors = _synthetic_errors(spherical_harmonic.Grid.T42(), cases=3, layers=2, seed=3)
    coarse = iu._state({f: np.zeros((2 if f != "log_surface_pressure" else 1,) + t21.modal_shape, np.float32)
                        for f in world.STATE_FIELDS})
    draws = iu.perturbations(errors, jax.random.key(1), [0, 1], 1.0)
    out = iu.add(coarse, draws)
    m, l = t21.modal_shape
    assert out.vorticity.shape == (2, 2, m, l)
    np.testing.assert_array_equal(np.asarray(out.vorticity), np.asarray(draws.vorticity)[..., :m, :l])
