"""Random band-limited spherical-harmonic coefficients, shared by the transform tests."""

from __future__ import annotations

import numpy as np


def random_coefficients(lmax: int, seed: int = 0, leading: tuple[int, ...] = ()) -> np.ndarray:
    """a_lm (..., lmax + 1, lmax + 1) of a real field band-limited to lmax: zero for m > l, a_l0 real."""
    rng = np.random.default_rng(seed)
    shape = (*leading, lmax + 1, lmax + 1)
    a = np.tril(rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    a[..., 0] = a[..., 0].real
    return a
