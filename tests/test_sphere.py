"""Associated Legendre functions and the least-squares spherical-harmonic transform."""

from __future__ import annotations

import numpy as np
import pytest

from weatherens import grid
from weatherens.sphere import legendre as sph
from helpers import random_coefficients

# (name, latitudes, nlon, lmax): the grids the project meets, at the highest degree each resolves
GRIDS = {
    "equiangular 64x32, L=31": (grid.equiangular_latitudes(32), 64, 31),
    "equiangular 64x32, L=20": (grid.equiangular_latitudes(32), 64, 20),
    "equiangular with poles 64x33, L=31": (grid.equiangular_latitudes(33, with_poles=True), 64, 31),
    "1.5 deg with poles 240x121, L=60": (grid.equiangular_latitudes(121, with_poles=True), 240, 60),
    "1.5 deg with poles 240x121, L=119": (grid.equiangular_latitudes(121, with_poles=True), 240, 119),
    "gaussian 64x32, L=31": (sph.gaussian_latitudes(32)[0], 64, 31),
}


def test_low_degrees_match_closed_forms():
    lat = np.array([-90.0, -60.0, -10.0, 0.0, 35.0, 90.0])
    s, c = np.sin(np.deg2rad(lat)), np.cos(np.deg2rad(lat))
    c[np.abs(lat) == 90] = 0.0
    p = sph.legendre_functions(lat, 2)
    # sqrt(2l+1) P_l for m = 0; sqrt((2l+1)(l-m)!/(l+m)!) P_lm for m > 0 (no Condon-Shortley phase)
    np.testing.assert_allclose(p[0, 0], 1.0, atol=1e-15)
    np.testing.assert_allclose(p[0, 1], np.sqrt(3) * s, atol=1e-15)
    np.testing.assert_allclose(p[1, 1], np.sqrt(3 / 2) * c, atol=1e-15)
    np.testing.assert_allclose(p[0, 2], np.sqrt(5) * (3 * s**2 - 1) / 2, atol=1e-14)
    np.testing.assert_allclose(p[1, 2], np.sqrt(5 / 6) * 3 * s * c, atol=1e-14)
    np.testing.assert_allclose(p[2, 2], np.sqrt(5 / 24) * 3 * c**2, atol=1e-14)
    np.testing.assert_array_equal(p[2, :2], 0.0)  # l < m is zero
    assert p[1, 1, 0] == 0.0 and p[2, 2, -1] == 0.0  # m > 0 vanishes exactly at the poles


def test_high_degrees_match_scipy():
    from scipy.special import gammaln, lpmv

    lat = grid.equiangular_latitudes(40)
    x = np.sin(np.deg2rad(lat))
    p = sph.legendre_functions(lat, 60)
    for l, m in [(31, 17), (60, 0), (60, 1), (60, 45), (60, 60)]:
        norm = np.sqrt((2 * l + 1) * np.exp(gammaln(l - m + 1) - gammaln(l + m + 1)))
        expected = (-1.0) ** m * norm * lpmv(m, l, x)  # scipy includes the Condon-Shortley phase
        np.testing.assert_allclose(p[m, l], expected, atol=1e-12)


@pytest.mark.parametrize("nlat", [16, 32, 48])
def test_orthonormal_under_gaussian_quadrature(nlat):
    """sum_j w_j P_lm(x_j) P_l'm(x_j) = delta_ll' exactly: Gauss quadrature is exact to degree 2 nlat - 1."""
    lat, w = sph.gaussian_latitudes(nlat)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    p = sph.legendre_functions(lat, nlat - 1)
    for m in range(nlat):
        gram = (p[m, m:] * w) @ p[m, m:].T
        np.testing.assert_allclose(gram, np.eye(nlat - m), atol=1e-12)


@pytest.mark.parametrize("name", list(GRIDS))
def test_analysis_matrices_invert_the_tables(name):
    """On any grid the least-squares operator is a left inverse of the Legendre table of each order:
    the discrete stand-in for orthonormality where no exact quadrature exists (equiangular grids)."""
    lat, nlon, lmax = GRIDS[name]
    p = sph.legendre_functions(lat, lmax)
    a = sph.analysis_matrices(lat, nlon, lmax)
    assert a.shape == (lmax + 1, lmax + 1, lat.size)
    for m in range(lmax + 1):
        np.testing.assert_allclose(a[m, m:] @ p[m, m:].T, np.eye(lmax + 1 - m), atol=1e-11)
        np.testing.assert_array_equal(a[m, :m], 0.0)


@pytest.mark.parametrize("name", list(GRIDS))
def test_round_trip_of_band_limited_fields(name):
    lat, nlon, lmax = GRIDS[name]
    coeffs = random_coefficients(lmax, leading=(2, 3))
    field = sph.sh_synthesis(coeffs, lat, nlon)
    assert field.shape == (2, 3, lat.size, nlon) and field.dtype == np.float64
    back = sph.sh_analysis(field, lat, lmax)
    np.testing.assert_allclose(back, coeffs, atol=1e-10)
    np.testing.assert_allclose(sph.sh_synthesis(back, lat, nlon), field, atol=1e-10 * np.abs(field).max())


def test_max_degree_and_too_high_a_degree():
    assert sph.max_degree(grid.equiangular_latitudes(32), 64) == 31  # nlat - 1
    assert sph.max_degree(grid.equiangular_latitudes(121, with_poles=True), 240) == 119  # nlat - 2
    assert sph.max_degree(grid.equiangular_latitudes(181, with_poles=True), 360) == 179
    assert sph.max_degree(grid.equiangular_latitudes(32), 40) == 19  # (nlon - 1) // 2
    with pytest.raises(ValueError, match="lmax=32 too high"):
        sph.analysis_matrices(grid.equiangular_latitudes(32), 64, 32)
    with pytest.raises(ValueError, match="longitudes"):
        sph.sh_synthesis(random_coefficients(31), grid.equiangular_latitudes(32), 62)


def test_parseval_per_degree_on_gaussian_grid():
    """sum_l P(l) = (1/4 pi) integral f^2, computed exactly by Gauss quadrature (degree 2L <= 2 nlat - 1)."""
    lat, w = sph.gaussian_latitudes(32)
    coeffs = random_coefficients(31, seed=3)
    field = sph.sh_synthesis(coeffs, lat, 64)
    area_mean = np.sum(w * (field**2).mean(axis=-1))
    assert sph.power_per_degree(sph.sh_analysis(field, lat)).sum() == pytest.approx(area_mean, rel=1e-12)


def test_legendre_tables_and_power_agree_with_dinosaur():
    """dinosaur's basis: unit L2 norm on [-1, 1] with the Condon-Shortley phase, so ours / sqrt(2) * (-1)^m;
    its real coefficients c (rows m = 0, 1, -1, 2, -2, ...) satisfy (1/4 pi) integral f^2 = sum c^2 / 4 pi."""
    from dinosaur import associated_legendre, spherical_harmonic

    g = spherical_harmonic.Grid(
        longitude_wavenumbers=32, total_wavenumbers=32, longitude_nodes=64, latitude_nodes=32, latitude_spacing="gauss"
    )
    _, sin_lat = g.nodal_axes
    lat = np.rad2deg(np.arcsin(sin_lat))
    np.testing.assert_allclose(lat, sph.gaussian_latitudes(32)[0], atol=1e-12)

    theirs = associated_legendre.evaluate(n_m=32, n_l=32, x=sin_lat)  # (m, lat, l)
    ours = sph.legendre_functions(lat, 31).transpose(0, 2, 1) / np.sqrt(2) * (-1.0) ** np.arange(32)[:, None, None]
    np.testing.assert_allclose(ours, theirs, atol=1e-13)

    # a random field in dinosaur's basis, synthesised in float64 from its own (numpy) basis matrices
    c = np.random.default_rng(7).standard_normal(g.modal_shape) * g.mask  # (2M - 1, L)
    basis = g.spherical_harmonics.basis
    field = np.einsum("im,mjl,ml->ji", np.asarray(basis.f, np.float64), np.asarray(basis.p, np.float64), c)
    power_theirs = (c**2).sum(axis=0) / (4 * np.pi)
    power_ours = sph.power_per_degree(sph.sh_analysis(field, lat, 31))
    np.testing.assert_allclose(power_ours, power_theirs, rtol=1e-10)
