"""Spherical harmonics on latitude/longitude grids.

`sht` is the differentiable JAX transform the model uses (`SphericalHarmonicTransform`); `legendre` holds the fully normalised associated Legendre functions (reusable tables
P[m, l, lat]) and a least-squares spherical-harmonic analysis/synthesis on any set of
latitudes (equiangular with or without poles, Gaussian).
"""

from weatherens.sphere.legendre import (
    analysis_matrices,
    gaussian_latitudes,
    legendre_functions,
    max_degree,
    power_per_degree,
    sh_analysis,
    sh_synthesis,
)

__all__ = [
    "analysis_matrices",
    "gaussian_latitudes",
    "legendre_functions",
    "max_degree",
    "power_per_degree",
    "sh_analysis",
    "sh_synthesis",
]
