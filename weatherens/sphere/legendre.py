"""Associated Legendre functions and a least-squares spherical-harmonic transform (numpy, float64).

Normalisation ("4π", fully normalised, geodesy convention, no Condon–Shortley phase)::

    ∫_{-1}^{1} P̄_lm(x)² dx = 2,   so   (1/4π) ∮ |P̄_lm(sin φ) e^{imλ}|² dΩ = 1,

i.e. Y_lm = P̄_lm(sin φ) e^{imλ} is orthonormal under the *area mean* over the sphere.
A real field is written

    f(φ, λ) = Σ_l Σ_{m=-l..l} a_lm P̄_l|m|(sin φ) e^{imλ},   a_{l,-m} = conj(a_lm),

and only m ≥ 0 is stored. Parseval on the sphere then reads

    (1/4π) ∮ f² dΩ = Σ_l [ |a_l0|² + 2 Σ_{m≥1} |a_lm|² ]   (`power_per_degree`).

P̄_lm is computed by the standard forward-column recurrence (Holmes & Featherstone 2002,
J. Geodesy 76:279–299, eqs. 11–13; the same as SHTns, Schaeffer 2013, G³ 14:751–758), with
t = sin φ, u = cos φ. H&F normalise the real basis cos(mλ), sin(mλ), which puts an extra √2 on
every m ≥ 1; here it is left out (P̄_11 below), as the basis is the complex e^{imλ}:

    P̄_00 = 1,  P̄_11 = √(3/2) u,  P̄_mm = √((2m+1)/(2m)) u P̄_{m-1,m-1}           (m ≥ 2)
    P̄_{m+1,m} = √(2m+3) t P̄_mm
    P̄_lm = a_lm t P̄_{l-1,m} − b_lm P̄_{l-2,m},
        a_lm = √((2l−1)(2l+1) / ((l−m)(l+m))),
        b_lm = √((2l+1)(l+m−1)(l−m−1) / ((l−m)(l+m)(2l−3))).

No extended-range scaling (H&F §3.2) is applied: sectoral values that underflow to 0 near the
poles are below 1e-300 and only matter for degrees in the thousands.

Analysis is a least-squares fit, not a quadrature: FFT over longitude (norm="forward"), then for
each order m the area-weighted least-squares problem

    min_a Σ_j w_j | F_m(φ_j) − Σ_{l=m..L} a_lm P̄_lm(sin φ_j) |²

is solved (QR of the weighted design matrix, precomputed per grid as `analysis_matrices`). A field that is
band-limited to degree L is recovered exactly (to rounding) on any grid where the problem is
well posed: L ≤ nlat − 1 without pole rows (equiangular, Gaussian), L ≤ nlat − 2 with both pole
rows (the poles carry no information for m ≥ 1), and L < nlon / 2 (m = nlon/2 is the Nyquist
wave, whose sine part the grid cannot see). For a field that is not band-limited the result is
the weighted least-squares projection onto degrees ≤ L.

Longitudes are assumed equally spaced, λ_i = λ_0 + 2πi / nlon; phases of a_lm are relative to
λ_0 (0 for canonical grids). Power spectra do not depend on λ_0.
"""

from __future__ import annotations

import functools

import numpy as np

from weatherens import grid

_MAX_LEFT_INVERSE_ERROR = 1e-8  # ~ condition number x 1e-16: beyond it the fit amplifies rounding noise


def gaussian_latitudes(nlat: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian latitudes (degrees, ascending) and their quadrature weights (sum to 1).

    The nodes are arcsin of the Gauss–Legendre roots, so Σ_j w_j g(φ_j) over latitudes is the
    exact area mean of any zonally averaged polynomial g(sin φ) of degree ≤ 2 nlat − 1.
    """
    x, w = np.polynomial.legendre.leggauss(int(nlat))
    return np.rad2deg(np.arcsin(x)), w / 2.0


def legendre_functions(lat: np.ndarray, lmax: int, mmax: int | None = None) -> np.ndarray:
    """Fully normalised associated Legendre functions P̄_lm(sin φ), float64.

    Args:
      lat: latitudes in degrees, any order, shape (nlat,).
      lmax: largest degree L.
      mmax: largest order (default L; must be ≤ L).

    Returns:
      P of shape (mmax + 1, lmax + 1, nlat) with P[m, l, j] = P̄_lm(sin φ_j) for l ≥ m and 0
      for l < m, in the 4π normalisation of the module docstring (no Condon–Shortley phase).
    """
    lmax = int(lmax)
    mmax = lmax if mmax is None else int(mmax)
    if lmax < 0 or not 0 <= mmax <= lmax:
        raise ValueError(f"need 0 <= mmax <= lmax; got lmax={lmax}, mmax={mmax}")
    phi = np.deg2rad(np.asarray(lat, dtype=np.float64))
    if phi.ndim != 1 or np.any(np.abs(phi) > np.pi / 2 + 1e-12):
        raise ValueError("lat must be a 1-D array of latitudes in [-90, 90] degrees")
    t = np.sin(phi)
    u = np.where(np.isclose(np.abs(phi), np.pi / 2, rtol=0, atol=1e-12), 0.0, np.cos(phi))
    p = np.zeros((mmax + 1, lmax + 1, phi.size))
    p[0, 0] = 1.0
    if mmax >= 1:
        p[1, 1] = np.sqrt(1.5) * u
    for mm in range(2, mmax + 1):
        p[mm, mm] = np.sqrt((2 * mm + 1) / (2 * mm)) * u * p[mm - 1, mm - 1]
    for k in range(1, lmax + 1):  # walk the diagonals l = m + k, vectorised over m
        m = np.arange(min(mmax, lmax - k) + 1)
        l = m + k
        if k == 1:
            p[m, l] = np.sqrt(2.0 * m + 3.0)[:, None] * t * p[m, m]
            continue
        a = np.sqrt((2.0 * l - 1) * (2.0 * l + 1) / ((l - m) * (l + m)))
        b = np.sqrt((2.0 * l + 1) * (l + m - 1) * (l - m - 1) / ((l - m) * (l + m) * (2.0 * l - 3)))
        p[m, l] = a[:, None] * t * p[m, l - 1] - b[:, None] * p[m, l - 2]
    return p


def _has_pole(lat: np.ndarray, sign: float) -> bool:
    return bool(np.any(np.isclose(lat, sign * 90.0, rtol=0, atol=1e-9)))


def max_degree(lat: np.ndarray, nlon: int) -> int:
    """Largest degree L the least-squares analysis can resolve on this grid.

    min(nlat − 1 − (number of pole rows beyond one), (nlon − 1) // 2); see the module docstring.
    """
    lat = np.asarray(lat, dtype=np.float64)
    poles = int(_has_pole(lat, 1.0)) + int(_has_pole(lat, -1.0))
    return int(min(lat.size - 1 - max(poles - 1, 0), (int(nlon) - 1) // 2))


@functools.lru_cache(maxsize=32)
def _analysis_cached(lat: tuple[float, ...], nlon: int, lmax: int, weights: tuple[float, ...] | None):
    lat_a = np.asarray(lat)
    limit = max_degree(lat_a, nlon)
    if lmax > limit:
        raise ValueError(
            f"lmax={lmax} too high for a {lat_a.size} x {nlon} grid (latitudes x longitudes); "
            f"the least-squares analysis resolves degrees up to {limit}"
        )
    if weights is None:
        w = grid.cell_area_fractions(lat_a)
    else:
        w = np.asarray(weights, dtype=np.float64)
    sw = np.sqrt(w / w.sum())
    p = legendre_functions(lat_a, lmax)
    a = np.zeros_like(p)
    for m in range(lmax + 1):
        design = sw[:, None] * p[m, m:].T  # (nlat, L - m + 1), full column rank when well posed
        q, r = np.linalg.qr(design)  # QR: several times faster than an SVD here
        a[m, m:] = np.linalg.solve(r, q.T) * sw[None, :]
        # A D = I up to rounding times the condition number of D: check it instead of estimating that
        err = np.abs(a[m, m:] @ p[m, m:].T - np.eye(lmax + 1 - m)).max()
        if not err < _MAX_LEFT_INVERSE_ERROR:
            raise ValueError(
                f"lmax={lmax}: least-squares analysis at order m={m} is ill-conditioned on these "
                f"{lat_a.size} latitudes (left-inverse error {err:.3g})"
            )
    a.setflags(write=False)
    return a


def analysis_matrices(lat: np.ndarray, nlon: int, lmax: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-order least-squares analysis operators, shape (lmax + 1, lmax + 1, nlat), float64.

    A[m, l, j] maps the zonal Fourier coefficients F_m(φ_j) = (1/nlon) Σ_i f(φ_j, λ_i) e^{-imλ_i}
    to a_lm = Σ_j A[m, l, j] F_m(φ_j); rows l < m are zero. The weights default to the cell-area
    fractions of `grid.cell_area_fractions` (bounds at mid-latitudes and ±90°); they only matter
    for fields that are not band-limited. Cached per grid; the returned array is read-only.

    Raises:
      ValueError if lmax exceeds `max_degree(lat, nlon)` or an order is ill-conditioned.
    """
    key_w = None if weights is None else tuple(np.asarray(weights, dtype=np.float64).tolist())
    lat_t = tuple(np.asarray(lat, dtype=np.float64).tolist())
    return _analysis_cached(lat_t, int(nlon), int(lmax), key_w)


def sh_analysis(
    field: np.ndarray, lat: np.ndarray, lmax: int | None = None, weights: np.ndarray | None = None
) -> np.ndarray:
    """Spherical-harmonic coefficients of real fields on a latitude/longitude grid.

    Args:
      field: real array (..., nlat, nlon); longitudes equally spaced over 360°.
      lat: latitudes in degrees, shape (nlat,).
      lmax: largest degree (default `max_degree(lat, nlon)`).
      weights: least-squares weights per latitude (default cell areas).

    Returns:
      complex128 array (..., lmax + 1, lmax + 1) with a[..., l, m] (zero for m > l) in the
      convention of the module docstring.
    """
    field = np.asarray(field, dtype=np.float64)
    nlat, nlon = field.shape[-2:]
    if np.size(lat) != nlat:
        raise ValueError(f"field has {nlat} latitudes but lat has {np.size(lat)}")
    lmax = max_degree(lat, nlon) if lmax is None else int(lmax)
    a = analysis_matrices(lat, nlon, lmax, weights)
    four = np.swapaxes(np.fft.rfft(field, axis=-1, norm="forward")[..., : lmax + 1], -1, -2)  # (..., m, nlat)
    coeffs = (a @ four.real[..., None])[..., 0] + 1j * (a @ four.imag[..., None])[..., 0]  # (..., m, l)
    return np.swapaxes(coeffs, -1, -2)


def sh_synthesis(coeffs: np.ndarray, lat: np.ndarray, nlon: int) -> np.ndarray:
    """Real fields (..., nlat, nlon) from coefficients (..., L + 1, L + 1) as `sh_analysis` returns."""
    coeffs = np.asarray(coeffs)
    lmax = coeffs.shape[-1] - 1
    if coeffs.shape[-2] != lmax + 1:
        raise ValueError(f"coefficients must be (..., L + 1, L + 1); got {coeffs.shape}")
    if lmax >= nlon / 2:
        raise ValueError(f"degree {lmax} needs more than {nlon} longitudes (at least {2 * lmax + 1})")
    p = legendre_functions(lat, lmax)
    c = np.swapaxes(coeffs, -1, -2)[..., None]  # (..., m, l, 1)
    pt = np.swapaxes(p, -1, -2)  # (m, nlat, l)
    four = np.swapaxes((pt @ c.real)[..., 0] + 1j * (pt @ c.imag)[..., 0], -1, -2)  # (..., nlat, m)
    pad = [(0, 0)] * (four.ndim - 1) + [(0, nlon // 2 + 1 - (lmax + 1))]
    return np.fft.irfft(np.pad(four, pad), n=nlon, axis=-1, norm="forward")


def power_per_degree(coeffs: np.ndarray) -> np.ndarray:
    """P(l) = |a_l0|² + 2 Σ_{m≥1} |a_lm|², shape (..., L + 1); Σ_l P(l) = area mean of f²."""
    power = np.abs(np.asarray(coeffs)) ** 2
    return power[..., 0] + 2.0 * power[..., 1:].sum(axis=-1)
