"""A differentiable spherical-harmonic transform in JAX (rfft over longitude + Legendre matmul).

The maths, the normalisation and the tables are those of `weatherens.sphere.legendre` (numpy,
float64), cast once to ``dtype``: 4π-normalised P̄_lm, complex basis e^{imλ}, m ≥ 0 stored,

    f(φ, λ) = Σ_l Σ_{|m|≤l} a_lm P̄_l|m|(sin φ) e^{imλ},    (1/4π) ∮ f² dΩ = Σ_l P(l).

Analysis = zonal FFT (`jnp.fft.rfft`, norm="forward": F_m = (1/nlon) Σ_i f_i e^{-imλ_i}; or the
same sums as a matmul, `zonal_dft_tables`, by default on CPUs up to `ZONAL_MATMUL_MAX_NLON`
longitudes), then per order m the precomputed least-squares operator A[m]
(`legendre.analysis_matrices`), so an
equiangular grid without poles resolves L = nlat − 1 and a grid with both poles L = nlat − 2
(capped by L ≤ (nlon − 1)/2). Synthesis = P̄ matmul, then `jnp.fft.irfft` (or its matmul). Each matmul is one
einsum over a stacked table, A as (mmax + 1, lmax + 1, nlat) and P̄ as (mmax + 1, nlat, lmax + 1),
with Precision.HIGHEST (GPU TF32 would lose ~3 digits). Real and imaginary parts go through the
same real einsum, so no complex copy of a table is ever made.

Memory: two tables of (L + 1)² nlat entries each (half are structural zeros, l < m), in ``dtype``,
and, where the zonal transform is a matmul, two zonal tables of 2 (L + 1) nlon entries
(sizes at 1.5° and 0.25°, and the cost of building them: docs/benchmarks.md). Beyond the tables,
memory is O(batch × nlat × nlon): no table is copied or transposed per call. The transform is a
pytree (tables as leaves, grid static): at large grids pass it to `jax.jit` as an argument, since a
closed-over constant is embedded in the compiled program.

References:
  J. R. Driscoll & D. M. Healy (1994), Computing Fourier transforms and convolutions on the
    2-sphere, Adv. Appl. Math. 15:202–250 (FFT in longitude, Legendre transform per order).
  N. Schaeffer (2013), Efficient spherical harmonic transforms aimed at pseudospectral numerical
    simulations (SHTns), G³ 14:751–758 (the rfft + per-order matmul layout, normalisation).
  B. Bonev et al. (2023), Spherical Fourier Neural Operators, ICML (differentiable SHT in networks).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from weatherens import grid
from weatherens.sphere import legendre

_HIGHEST = jax.lax.Precision.HIGHEST
# On CPUs, up to this many longitudes the zonal transform is by default a matmul with the tables of
# `zonal_dft_tables` instead of an FFT: at 64, 128 and 240 longitudes its gradient is faster there, at
# 480 even, above slower (docs/benchmarks.md). Other backends keep the FFT by default (not measured here).
ZONAL_MATMUL_MAX_NLON = 256


def zonal_dft_tables(nlon: int, mmax: int) -> tuple[np.ndarray, np.ndarray]:
    """The real zonal Fourier transform of `SphericalHarmonicTransform` as two float64 matrices.

    Forward E (2 [cos, sin part], mmax + 1, nlon): Σ_i E[0, m, i] f_i = Re F_m and Σ_i E[1, m, i] f_i =
    Im F_m, with F_m = (1/nlon) Σ_i f_i e^{-imλ_i} (numpy's rfft, norm="forward"), λ_i = 2πi/nlon.
    Inverse G (nlon, 2, mmax + 1): f_i = Σ_{c,m} G[i, c, m] [Re F_m, Im F_m][c], the real field of
    coefficients m ≤ mmax (numpy's irfft, norm="forward": weight 1 for m = 0 and m = nlon/2, 2 between,
    and the imaginary part of F_0 ignored).
    """
    if not 0 <= mmax <= nlon // 2:
        raise ValueError(f"mmax={mmax} out of range for {nlon} longitudes (at most {nlon // 2})")
    m = np.arange(mmax + 1, dtype=np.float64)
    phase = np.outer(m, 2.0 * np.pi * np.arange(nlon) / nlon)  # (m, i)
    forward = np.stack([np.cos(phase), -np.sin(phase)]) / nlon
    weight = np.where((m == 0) | (2 * m == nlon), 1.0, 2.0)
    inverse = np.stack([np.cos(phase) * weight[:, None], -np.sin(phase) * weight[:, None]]).transpose(2, 0, 1)
    return forward, inverse


@jax.tree_util.register_pytree_node_class
class SphericalHarmonicTransform:
    """Spherical-harmonic transform on one latitude/longitude grid.

    Built once per grid from numpy tables; holds jnp constants; the methods are pure functions
    of arrays and work under `jax.jit`, `jax.grad` and `jax.vmap`.

    Args:
      lat_deg: latitudes in degrees north, shape (nlat,), any order (equiangular with or
        without poles, Gaussian).
      nlon: number of equally spaced longitudes, starting at 0° (phases are relative to λ_0).
      lmax: largest total wavenumber L (default `legendre.max_degree(lat_deg, nlon)`).
      dtype: real dtype of the tables and of the fields (complex coefficients follow it:
        complex64 for float32).
      zonal_matmul: the zonal transform as a matmul (True) or an FFT (False); default: a matmul on
        a CPU backend up to `ZONAL_MATMUL_MAX_NLON` longitudes, else the FFT. The two agree to
        rounding; the matmul costs 4 nlon / (mmax + 1) ≈ 8 times the Legendre step's multiply-adds.

    Attributes:
      lmax, mmax: largest degree and order kept (mmax = lmax, triangular truncation).
      nlat, nlon: grid shape.
    """

    def __init__(self, lat_deg: np.ndarray, nlon: int, lmax: int | None = None, dtype=jnp.float32,
                 zonal_matmul: bool | None = None):
        lat = np.asarray(lat_deg, dtype=np.float64)
        if lat.ndim != 1 or lat.size < 2:
            raise ValueError(f"lat_deg must be a 1-D array of at least 2 latitudes; got shape {lat.shape}")
        if int(nlon) < 2:
            raise ValueError(f"nlon must be at least 2; got {nlon}")
        limit = legendre.max_degree(lat, int(nlon))
        lmax = limit if lmax is None else int(lmax)
        if not 0 <= lmax <= limit:
            raise ValueError(
                f"lmax={lmax} out of range for a {lat.size} x {nlon} grid (latitudes x longitudes): "
                f"the least-squares analysis resolves degrees 0..{limit}"
            )
        self.lmax = self.mmax = lmax
        self.nlat, self.nlon = lat.size, int(nlon)
        self.dtype = jnp.dtype(dtype)
        np_dtype = np.dtype(self.dtype)
        with jax.ensure_compile_time_eval():  # concrete even if first built inside a traced function
            # A[m, l, j]: F_m(φ_j) -> a_lm (least squares), (mmax + 1, lmax + 1, nlat)
            self._analysis = jnp.asarray(legendre.analysis_matrices(lat, self.nlon, lmax).astype(np_dtype))
            # P[m, j, l] = P̄_lm(sin φ_j), (mmax + 1, nlat, lmax + 1): contracting the last axis makes
            # synthesis faster on CPU at large grids than `legendre`'s order (docs/benchmarks.md)
            p = legendre.legendre_functions(lat, lmax).astype(np_dtype)
            self._legendre = jnp.asarray(np.swapaxes(p, 1, 2))
            self._zonal = None
            if zonal_matmul is None:
                zonal_matmul = self.nlon <= ZONAL_MATMUL_MAX_NLON and jax.default_backend() == "cpu"
            if zonal_matmul:
                forward, inverse = zonal_dft_tables(self.nlon, self.mmax)
                self._zonal = (jnp.asarray(forward.astype(np_dtype)), jnp.asarray(inverse.astype(np_dtype)))

    # -- pytree: tables are leaves, the grid description is static --------------------------------
    def tree_flatten(self):
        return (self._analysis, self._legendre, self._zonal), (self.lmax, self.nlat, self.nlon, self.dtype)

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        obj = object.__new__(cls)
        obj.lmax, obj.nlat, obj.nlon, obj.dtype = aux
        obj.mmax = obj.lmax
        obj._analysis, obj._legendre, obj._zonal = leaves
        return obj

    @property
    def analysis_table(self) -> jax.Array:
        """A[m, l, j], (mmax + 1, lmax + 1, nlat): Fourier coefficient F_m(φ_j) -> a_lm (zero for l < m)."""
        return self._analysis

    @property
    def legendre_table(self) -> jax.Array:
        """P̄[m, j, l] = P̄_lm(sin φ_j), (mmax + 1, nlat, lmax + 1): a_lm -> F_m(φ_j) (zero for l < m)."""
        return self._legendre

    @property
    def zonal_tables(self) -> tuple[jax.Array, jax.Array] | None:
        """`zonal_dft_tables` in ``dtype`` (forward (2, mmax + 1, nlon), inverse (nlon, 2, mmax + 1)), or
        None where the zonal transform is an FFT (`zonal_matmul`)."""
        return self._zonal

    def __repr__(self) -> str:
        return (
            f"SphericalHarmonicTransform(nlat={self.nlat}, nlon={self.nlon}, lmax={self.lmax}, "
            f"dtype={self.dtype})"
        )

    # -- transforms -----------------------------------------------------------------------------
    def _check(self, shape: tuple[int, ...], want: tuple[int, int], what: str) -> None:
        if len(shape) < 2 or tuple(shape[-2:]) != want:
            raise ValueError(f"{what} must have shape (..., {want[0]}, {want[1]}) for {self!r}; got {shape}")

    def analysis(self, x: jax.Array) -> jax.Array:
        """Coefficients a_lm of real fields.

        Args:
          x: real array (..., nlat, nlon), any units.

        Returns:
          complex array (..., lmax + 1 [l], mmax + 1 [m]) in the units of x; zero where m > l.
          For a field band-limited to lmax it is exact to rounding; otherwise the area-weighted
          least-squares projection onto degrees ≤ lmax.
        """
        x = jnp.asarray(x, self.dtype)
        self._check(x.shape, (self.nlat, self.nlon), "field")
        if self._zonal is not None:
            parts = jnp.einsum("...ji,cmi->...cjm", x, self._zonal[0], precision=_HIGHEST)  # (..., 2, nlat, m)
        else:
            four = jnp.fft.rfft(x, axis=-1, norm="forward")[..., : self.mmax + 1]  # (..., nlat, m)
            parts = jnp.stack([four.real, four.imag], axis=-3)
        out = jnp.einsum("...cjm,mlj->...clm", parts, self._analysis, precision=_HIGHEST)
        return jax.lax.complex(out[..., 0, :, :], out[..., 1, :, :])

    def synthesis(self, coeffs: jax.Array) -> jax.Array:
        """Real fields (..., nlat, nlon) from coefficients (..., lmax + 1, mmax + 1).

        The inverse of `analysis` on band-limited fields. Entries with m > l are ignored, and so are
        the imaginary parts of a_l0 (a real field has real a_l0).
        """
        coeffs = jnp.asarray(coeffs)
        self._check(coeffs.shape, (self.lmax + 1, self.mmax + 1), "coefficients")
        parts = jnp.stack([coeffs.real, coeffs.imag], axis=-3).astype(self.dtype)  # (..., 2, l, m)
        out = jnp.einsum("...clm,mjl->...cjm", parts, self._legendre, precision=_HIGHEST)
        if self._zonal is not None:
            return jnp.einsum("...cjm,icm->...ji", out, self._zonal[1], precision=_HIGHEST)
        four = jax.lax.complex(out[..., 0, :, :], out[..., 1, :, :])  # (..., nlat, m)
        pad = [(0, 0)] * (four.ndim - 1) + [(0, self.nlon // 2 + 1 - (self.mmax + 1))]
        return jnp.fft.irfft(jnp.pad(four, pad), n=self.nlon, axis=-1, norm="forward")

    def power_spectrum(self, x: jax.Array) -> jax.Array:
        """Power per total wavenumber P(l) = |a_l0|² + 2 Σ_{m≥1} |a_lm|², shape (..., lmax + 1).

        Same normalisation as `legendre.power_per_degree`: Σ_l P(l) is the area mean of x² for a
        band-limited x (units of x squared).
        """
        a = self.analysis(x)
        power = jnp.square(a.real) + jnp.square(a.imag)
        return power[..., 0] + 2.0 * power[..., 1:].sum(axis=-1)

    def laplacian(self, coeffs: jax.Array, radius: float = 1.0) -> jax.Array:
        """∇² in spectral space: a_lm ↦ −l(l+1)/radius² a_lm, shape (..., lmax + 1, mmax + 1).

        Units: those of the coefficients per radius² (pass the radius in metres for m⁻²).
        """
        l = np.arange(self.lmax + 1, dtype=np.float64)
        eig = jnp.asarray(-l * (l + 1), self.dtype)[:, None]
        return coeffs * (eig / jnp.square(jnp.asarray(radius, self.dtype)))


def integrate(x: jax.Array, lat_deg: np.ndarray, radius: float = 1.0) -> jax.Array:
    """Area integral ∮ x dA over the sphere with the grid's cell-area quadrature.

    Uses `grid.latitude_weights` (cell areas, bounds at mid-latitudes and ±90°, mean 1):
    ∮ x dA ≈ 4π radius² · mean_{j,i}(w_j x_ji): exact for constants, a midpoint-type rule in
    sin φ otherwise (the area weighting of WeatherBench 2).

    Args:
      x: array (..., nlat, nlon) on equally spaced longitudes.
      lat_deg: latitudes in degrees north, shape (nlat,), any order.
      radius: sphere radius (e.g. 6.371e6 m for the Earth).

    Returns:
      array (...) in units of x times radius units squared.
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[-2] != lat.size:
        raise ValueError(f"x must have shape (..., {lat.size}, nlon) to match lat_deg; got {x.shape}")
    w = grid.latitude_weights(lat) * (4.0 * math.pi / (lat.size * x.shape[-1]))
    dtype = jnp.result_type(x.dtype, jnp.float32)
    total = jnp.einsum("...ji,j->...", x.astype(dtype), jnp.asarray(w, dtype), precision=_HIGHEST)
    return total * jnp.square(jnp.asarray(radius, dtype))
