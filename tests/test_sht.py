"""The JAX spherical-harmonic transform: round trips, invariants, references, autodiff."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weatherens import grid
from weatherens.sphere import legendre
from weatherens.sphere.sht import ZONAL_MATMUL_MAX_NLON, SphericalHarmonicTransform, integrate, zonal_dft_tables
from helpers import random_coefficients

EARTH_RADIUS = 6.371e6  # m

# (latitudes in degrees, nlon): WeatherBench 2 64 x 32 without poles, a small grid with both poles
# (L = nlat - 2 = 17), a Gaussian grid (dinosaur's T21 nodes)
GRIDS = {
    "equiangular 64x32": (grid.equiangular_latitudes(32), 64),
    "poles 36x19": (grid.equiangular_latitudes(19, with_poles=True), 36),
    "gaussian 64x32": (legendre.gaussian_latitudes(32)[0], 64),
}
# the zonal transform as a matmul (the CPU default on these grids) and as an FFT (the default above
# sht.ZONAL_MATMUL_MAX_NLON longitudes and on other backends), each case on both
ZONAL = {"matmul": True, "fft": False}


class Jitted:
    """The transform's methods under jax.jit, compiled once per grid and shape (eager dispatch
    compiles every primitive separately, ~6x slower for these tiny tests)."""

    def __init__(self, sht: SphericalHarmonicTransform):
        self.lmax, self.mmax, self.laplacian = sht.lmax, sht.mmax, sht.laplacian
        self.analysis = jax.jit(sht.analysis)
        self.synthesis = jax.jit(sht.synthesis)
        self.power_spectrum = jax.jit(sht.power_spectrum)


@pytest.fixture(scope="module", params=[(g, z) for g in GRIDS for z in ZONAL], ids=lambda p: f"{p[0]}, {p[1]}")
def case(request):
    grid_name, zonal = request.param
    lat, nlon = GRIDS[grid_name]
    return lat, nlon, Jitted(SphericalHarmonicTransform(lat, nlon, zonal_matmul=ZONAL[zonal]))


@pytest.mark.parametrize("nlon, mmax", [(64, 31), (36, 17), (8, 4), (9, 4)])  # (8, 4): the Nyquist order
def test_zonal_tables_are_numpys_rfft_and_irfft(nlon, mmax):
    forward, inverse = zonal_dft_tables(nlon, mmax)
    f = np.random.default_rng(0).standard_normal((3, nlon))
    four = np.fft.rfft(f, axis=-1, norm="forward")[:, : mmax + 1]
    np.testing.assert_allclose(np.einsum("cmi,ni->ncm", forward, f), np.stack([four.real, four.imag], 1), atol=1e-14)
    coeffs = np.random.default_rng(1).standard_normal((3, 2, mmax + 1))
    padded = np.zeros((3, nlon // 2 + 1), complex)
    padded[:, : mmax + 1] = coeffs[:, 0] + 1j * coeffs[:, 1]
    want = np.fft.irfft(padded, n=nlon, axis=-1, norm="forward")
    np.testing.assert_allclose(np.einsum("icm,ncm->ni", inverse, coeffs), want, atol=1e-13)


def test_the_zonal_matmul_is_the_cpu_default_up_to_its_limit_and_leaves_no_fft_in_a_gradient(monkeypatch):
    lat = grid.equiangular_latitudes(32)
    assert jax.default_backend() == "cpu"
    assert SphericalHarmonicTransform(lat, 64).zonal_tables is not None
    assert SphericalHarmonicTransform(lat, ZONAL_MATMUL_MAX_NLON + 2, lmax=31).zonal_tables is None
    with monkeypatch.context() as m:
        m.setattr(jax, "default_backend", lambda: "gpu")
        assert SphericalHarmonicTransform(lat, 64).zonal_tables is None  # other backends: the FFT
        assert SphericalHarmonicTransform(lat, 64, zonal_matmul=True).zonal_tables is not None
    for zonal, ffts in ((True, False), (False, True)):
        sht = SphericalHarmonicTransform(lat, 64, zonal_matmul=zonal)
        grad = jax.jit(jax.grad(lambda x: jnp.sum(jnp.square(sht.synthesis(sht.analysis(x))))))
        hlo = grad.lower(jnp.ones((32, 64))).as_text()
        assert ("fft" in hlo) == ffts


def test_shapes_and_degrees(case):
    lat, nlon, sht = case
    assert sht.lmax == sht.mmax == legendre.max_degree(lat, nlon)
    a = sht.analysis(jnp.zeros((2, lat.size, nlon)))
    assert a.shape == (2, sht.lmax + 1, sht.mmax + 1) and a.dtype == jnp.complex64
    assert sht.synthesis(a).shape == (2, lat.size, nlon) and sht.synthesis(a).dtype == jnp.float32
    assert sht.power_spectrum(jnp.zeros((2, lat.size, nlon))).shape == (2, sht.lmax + 1)


def test_round_trip_of_band_limited_field(case):
    lat, nlon, sht = case
    a = random_coefficients(sht.lmax, leading=(2,))
    field = np.asarray(sht.synthesis(a))
    reference = legendre.sh_synthesis(a, lat, nlon)  # float64
    np.testing.assert_allclose(field, reference, rtol=0, atol=1e-5 * np.abs(field).max())
    back = np.asarray(sht.analysis(field))
    np.testing.assert_allclose(back, a, rtol=0, atol=1e-5 * np.abs(a).max())
    np.testing.assert_array_equal(np.triu(back, k=1), 0.0)  # m > l stays zero
    again = np.asarray(sht.synthesis(back))
    np.testing.assert_allclose(again, field, rtol=0, atol=1e-5 * np.abs(field).max())


def test_integral_of_one_is_the_area_of_the_sphere(case):
    lat, nlon, _ = case
    area = integrate(np.ones((2, lat.size, nlon)), lat, radius=EARTH_RADIUS)
    np.testing.assert_allclose(area, 4 * math.pi * EARTH_RADIUS**2, rtol=1e-6)
    # latitude order does not matter; the unit sphere has area 4π
    np.testing.assert_allclose(integrate(np.ones((2, lat.size, nlon)), lat[::-1]), 4 * math.pi, rtol=1e-6)
    f = np.random.default_rng(7).standard_normal((2, lat.size, nlon))
    np.testing.assert_allclose(integrate(f[:, ::-1], lat[::-1]), integrate(f, lat), rtol=1e-5)


def _closed_form(phi, lam):
    """f = Σ c_k g_k of closed-form spherical harmonics g_k of degree l_k, and Σ −l_k(l_k+1) c_k g_k."""
    s, c = np.sin(phi), np.cos(phi)
    terms = [  # (degree, coefficient, function)
        (1, 1.0, c * np.cos(lam)),
        (2, 2.0, s * c * np.sin(lam)),
        (3, -1.0, c**3 * np.cos(3 * lam)),
        (4, 0.5, (35 * s**4 - 30 * s**2 + 3) / 8),
    ]
    f = sum(k * g for _, k, g in terms)
    lap = sum(-l * (l + 1) * k * g for l, k, g in terms)
    return f, lap


def test_spherical_harmonics_are_laplacian_eigenfunctions(case):
    lat, nlon, sht = case
    phi = np.deg2rad(lat)[:, None]
    lam = np.deg2rad(grid.longitudes(nlon))[None, :]
    f, analytic = _closed_form(phi, lam)
    r = EARTH_RADIUS
    spectral = np.asarray(sht.synthesis(sht.laplacian(sht.analysis(np.stack([f, f])), radius=r))[0])
    # float32 rounding in the analysis (~1e-7 of |f| in every a_lm) is amplified by l(l+1) ≤ L(L+1)
    tol = 4e-7 * sht.lmax * (sht.lmax + 1) * np.abs(f).max() / r**2
    np.testing.assert_allclose(spectral, analytic / r**2, rtol=0, atol=tol)
    # an independent check of the analytic values: centred finite differences of
    # ∇²f = [∂φ(cos φ ∂φ f) / cos φ + ∂λλ f / cos² φ] / r², away from the poles
    h = 1e-4
    inner = np.abs(lat) < 89.0
    p, lm = np.broadcast_arrays(phi[inner], lam)

    def g(dp, dl):
        return _closed_form(p + dp, lm + dl)[0]

    d_phi = (np.cos(p + h / 2) * (g(h, 0) - g(0, 0)) - np.cos(p - h / 2) * (g(0, 0) - g(-h, 0))) / h**2
    d_lam = (g(0, h) - 2 * g(0, 0) + g(0, -h)) / h**2
    fd = (d_phi / np.cos(p) + d_lam / np.cos(p) ** 2) / r**2
    np.testing.assert_allclose(spectral[inner], fd, rtol=0, atol=1e-4 * np.abs(fd).max())


def test_agrees_with_numpy_least_squares_analysis(case):
    lat, nlon, sht = case
    field = np.random.default_rng(1).standard_normal((2, lat.size, nlon))  # not band-limited
    expected = legendre.sh_analysis(field, lat)
    np.testing.assert_allclose(sht.analysis(field), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_power_spectrum_matches_numpy(case):
    lat, nlon, sht = case
    field = np.random.default_rng(2).standard_normal((2, lat.size, nlon))
    expected = legendre.power_per_degree(legendre.sh_analysis(field, lat))
    got = np.asarray(sht.power_spectrum(field))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.sum(-1).max())
    # one term per degree: P(l) = |a_l0|² + 2 Σ_{m≥1} |a_lm|²
    a = np.zeros((2, sht.lmax + 1, sht.mmax + 1), complex)
    a[:, 5, 3], a[:, 2, 0] = 1.0 + 1.0j, 2.0  # P(5) = 2 · |1 + i|² = 4, P(2) = 2² = 4
    power = np.asarray(sht.power_spectrum(sht.synthesis(a)))[0]
    np.testing.assert_allclose(power[[2, 5]], [4.0, 4.0], rtol=1e-5)
    np.testing.assert_allclose(power.sum(), 8.0, rtol=1e-5)


def test_power_spectrum_agrees_with_dinosaur():
    """Power per degree is independent of phase and sign conventions.

    dinosaur's real basis has unit L² norm on the unit sphere (∫ Y² dΩ = 1), ours unit area mean,
    so Σ_m c_lm² (dinosaur) = 4π P(l) (ours) for the same field.
    """
    spherical_harmonic = pytest.importorskip("dinosaur.spherical_harmonic")
    dgrid = spherical_harmonic.Grid.T21()  # 64 x 32 Gaussian, m <= 21, l <= 22
    rng = np.random.default_rng(3)
    modal = rng.standard_normal(dgrid.modal_shape) * dgrid.mask
    nodal = np.asarray(jax.jit(dgrid.to_nodal)(jnp.asarray(modal, jnp.float32))).T  # (lon, lat) -> (lat, lon)
    lat = np.rad2deg(dgrid.latitudes)
    assert nodal.shape == (lat.size, dgrid.longitudes.size) and np.all(np.diff(lat) > 0)
    sht = SphericalHarmonicTransform(lat, dgrid.longitudes.size)
    ours = np.asarray(jax.jit(sht.power_spectrum)(nodal))
    theirs = (modal**2).sum(axis=0) / (4 * math.pi)  # per total wavenumber l = 0..22
    np.testing.assert_allclose(ours[: theirs.size], theirs, rtol=1e-4)
    np.testing.assert_allclose(ours[theirs.size :], 0.0, atol=1e-6 * theirs.sum())
    # and the other way round: dinosaur's Gaussian quadrature recovers its coefficients from our
    # synthesis of our analysis of its field
    ours_field = jax.jit(lambda x: sht.synthesis(sht.analysis(x)))(nodal)
    modal_back = np.asarray(jax.jit(dgrid.to_modal)(ours_field.T))
    np.testing.assert_allclose(modal_back, modal, rtol=0, atol=1e-5 * np.abs(modal).max())
    # same Laplacian eigenvalues
    lap = np.asarray(sht.laplacian(jnp.ones((sht.lmax + 1, 1)), radius=2.0))[:23, 0]
    np.testing.assert_allclose(lap, dgrid.laplacian_eigenvalues / 4.0, rtol=1e-6)


def test_gradient_matches_finite_difference():
    lat, nlon = GRIDS["equiangular 64x32"]
    sht = SphericalHarmonicTransform(lat, nlon)
    weights = jnp.asarray(np.random.default_rng(4).uniform(0.5, 1.5, (sht.lmax + 1, sht.mmax + 1)))

    def loss(x):  # quadratic in x, so a centred difference is exact up to rounding
        y = sht.synthesis(sht.laplacian(sht.analysis(x)) * weights)
        return jnp.mean(jnp.square(y)) * 1e-4

    x = jnp.asarray(np.random.default_rng(5).standard_normal((lat.size, nlon)), jnp.float32)
    grad = jax.jit(jax.grad(loss))(x)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    j, i, eps = 7, 13, 0.5
    dx = jnp.zeros_like(x).at[j, i].set(eps)
    loss_jit = jax.jit(loss)
    fd = (loss_jit(x + dx) - loss_jit(x - dx)) / (2 * eps)
    np.testing.assert_allclose(grad[j, i], fd, rtol=2e-3)
    power_grad = jax.jit(jax.grad(lambda x: sht.power_spectrum(x)[1:].sum()))(x)
    assert np.all(np.isfinite(power_grad))


def test_jit_vmap_and_transform_as_argument():
    lat, nlon = GRIDS["poles 36x19"]
    sht = SphericalHarmonicTransform(lat, nlon)
    x = jnp.asarray(np.random.default_rng(6).standard_normal((4, 2, lat.size, nlon)), jnp.float32)
    eager = sht.analysis(x)  # works without jit too
    atol, field_atol = 1e-5 * float(jnp.abs(eager).max()), 1e-5 * float(jnp.abs(x).max())
    np.testing.assert_allclose(jax.jit(sht.analysis)(x), eager, atol=atol)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.vmap(sht.analysis)))(x), eager, atol=atol)
    field = jax.jit(sht.synthesis)(eager)
    np.testing.assert_allclose(jax.jit(jax.vmap(sht.synthesis))(eager), field, atol=field_atol)
    # a pytree: can be a jit argument (tables then are inputs, not constants baked into the program)
    round_trip = jax.jit(lambda t, x: t.synthesis(t.analysis(x)))
    np.testing.assert_allclose(round_trip(sht, x), field, atol=field_atol)
    integrate_jit = jax.jit(integrate, static_argnums=1)  # latitudes are static (numpy) grid data
    np.testing.assert_allclose(integrate_jit(x, tuple(lat)), integrate(x, lat), rtol=1e-6)


def test_bad_input_fails_early():
    lat = grid.equiangular_latitudes(32)
    with pytest.raises(ValueError, match="lmax=40"):
        SphericalHarmonicTransform(lat, 64, lmax=40)
    sht = SphericalHarmonicTransform(lat, 64, lmax=10)
    with pytest.raises(ValueError, match="field must have shape"):
        sht.analysis(jnp.zeros((32, 65)))
    with pytest.raises(ValueError, match="coefficients must have shape"):
        sht.synthesis(jnp.zeros((12, 11), jnp.complex64))
