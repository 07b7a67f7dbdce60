"""What the step adds: a band-limited increment, and global means that the physics conserves.

Band limit: the decoder is pointwise, so nothing stops its output from holding power at the grid
scale, including the half of the grid's degrees of freedom that no degree <= L of the spherical
harmonic analysis sees (a 64 x 32 grid has 2,048 values, triangular T31 1,024 real coefficients).
`IncrementFilter` analyses the increment at the grid's largest degree (`sphere.sht`, exact for
every field the grid's harmonics span; a least-squares fit truncated at L' < the grid's limit would
alias the degrees above L' into those below it), multiplies degree l by

    w_l = 1                                      for l <= L' - T
    w_l = cos^2(pi/2 (l - L' + T) / (T + 1))     for L' - T < l <= L'

and zero above L', then synthesises: a spectral filter in the manner of the dealiasing and hyperdiffusion filters
of spectral models (Orszag 1971; the exponential filter of Hou & Li 2007 plays the same role),
and of FourCastNet 3's band-limited output (Bonev et al. 2025, arXiv:2507.12144).

Conservation: `keep_global_means` restores the area-weighted global mean (`grid.area_mean`, the
cell-area weights of verification) of chosen channels to their value before the step, e.g.
surface pressure, whose global mean is the atmosphere's mass (dry mass in a Held-Suarez world).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from weatherens import grid
from weatherens.sphere.sht import SphericalHarmonicTransform


def taper_weights(lmax: int, taper: int) -> np.ndarray:
    """w_l for l = 0..lmax (module docstring), float64 (lmax + 1,); taper = 0 keeps every degree <= lmax."""
    l = np.arange(lmax + 1, dtype=np.float64)
    start = lmax - taper
    ramp = np.cos(0.5 * np.pi * (l - start) / (taper + 1)) ** 2
    return np.where(l <= start, 1.0, ramp)


class IncrementFilter:
    """Band-limits fields (..., lat, lon) to degrees <= lmax with a cos^2 taper of `taper` degrees."""

    def __init__(self, lat: np.ndarray, nlon: int, lmax: int, taper: int, zonal_matmul: bool | None = None):
        self.sht = SphericalHarmonicTransform(lat, nlon, zonal_matmul=zonal_matmul)
        if lmax > self.sht.lmax:
            raise ValueError(f"increment_lmax = {lmax}: the {len(lat)} x {nlon} grid resolves degrees up to {self.sht.lmax}")
        weights = np.zeros(self.sht.lmax + 1)
        weights[:lmax + 1] = taper_weights(lmax, taper)
        self.weights = jnp.asarray(weights, jnp.float32)[:, None]  # (L + 1, 1), broadcast over m

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.sht.synthesis(self.sht.analysis(x) * self.weights)


def keep_global_means(x_next: jax.Array, x_now: jax.Array, channels: np.ndarray, lat: np.ndarray) -> jax.Array:
    """x_next (C, lat, lon) with channels `channels` (int indices) shifted by a constant so that their
    area-weighted means equal x_now's."""
    if channels.size == 0:
        return x_next
    drift = grid.area_mean(x_next[channels], lat) - grid.area_mean(x_now[channels], lat)  # (K,)
    return x_next.at[channels].add(-drift[:, None, None])
