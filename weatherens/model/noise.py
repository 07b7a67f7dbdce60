"""Per-member noise, drawn only from explicit PRNG keys, so that a member is reproducible.

Member j of an ensemble gets `member_key(key, j)` = fold_in(key, j) (the design's convention). Its
keys for separate purposes never overlap: its noise at rollout step n comes from
`step_key(member_key, n)` = fold_in(fold_in(member key, STEPS), n), its noise fields' initial state
from fold_in(member key, INITIAL) and its initial-condition perturbation from
`perturbation_key(member_key)` = fold_in(member key, PERTURBATION). So member j is the same whether
it runs on one device or eight, in a batch of 4 members or of 400.

Two kinds of noise feed the network:
- a latent vector z ~ N(0, I_D) per member and step, which modulates the conditional layer norms
  (AIFS-CRPS, Lang et al. 2024; FGN, Alet et al. 2025);
- optionally, spatially correlated noise fields on the sphere, an AR(1) process of spherical-harmonic
  coefficients (FourCastNet 3, Bonev et al. 2025, arXiv:2507.12144, whose noise is a diffusion on the
  sphere): c_{n+1} = rho c_n + sqrt(1 - rho^2) eps_n, with eps_lm ~ N(0, a_l^2) and
  a_l^2 proportional to exp(-l (l + 1) / (2 d^2)), d = `noise_field_degree`, scaled so that the field
  has unit variance at every point. rho = exp(-dt / tau) ties it to a decorrelation time tau.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from weatherens.sphere.sht import SphericalHarmonicTransform


INITIAL, STEPS, PERTURBATION = 0, 1, 2


def member_key(key: jax.Array, member: int | jax.Array) -> jax.Array:
    """The key of member `member` (an int or a traced integer)."""
    return jax.random.fold_in(key, member)


def step_key(key: jax.Array, step: int | jax.Array) -> jax.Array:
    """The key of rollout step `step` of a member."""
    return jax.random.fold_in(jax.random.fold_in(key, STEPS), step)


def initial_key(key: jax.Array) -> jax.Array:
    """The key of a member's noise-field state before its first step."""
    return jax.random.fold_in(key, INITIAL)


def perturbation_key(key: jax.Array) -> jax.Array:
    """The key of a member's initial-condition perturbation."""
    return jax.random.fold_in(key, PERTURBATION)


def latent_vector(key: jax.Array, dim: int) -> jax.Array:
    """z ~ N(0, I), shape (dim,), float32."""
    return jax.random.normal(key, (dim,), jnp.float32)


class SphericalNoise:
    """Unit-variance AR(1) noise fields on the sphere, in spectral space (see module doc).

    `initial(key)` draws a stationary state (F, L + 1, M + 1) complex; `advance(state, key)` one step;
    `fields(state)` the grid fields (F, lat, lon). Pure functions of their arguments.
    """

    def __init__(self, sht: SphericalHarmonicTransform, channels: int, degree: float, rho: float):
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"noise_field_rho must lie in [0, 1), got {rho}")
        self.sht, self.channels, self.rho = sht, channels, float(rho)
        l = np.arange(sht.lmax + 1, dtype=np.float64)
        power = np.exp(-l * (l + 1) / (2.0 * degree**2))
        # Variance at a point of a field with coefficient variance a_l^2 (4 pi-normalised, addition
        # theorem): sum_l (2 l + 1) a_l^2. Complex m > 0 coefficients carry half of it in each part.
        amplitude = np.sqrt(power / np.sum((2 * l + 1) * power))
        m = np.arange(sht.mmax + 1)
        mask = (m[None, :] <= l[:, None]).astype(np.float64)
        part = np.where(m[None, :] == 0, 1.0, np.sqrt(0.5))  # m = 0 real, m > 0 complex
        self.scale = jnp.asarray(amplitude[:, None] * mask * part, jnp.float32)  # (L + 1, M + 1)
        self.real_m0 = jnp.asarray(m == 0)

    def _draw(self, key: jax.Array) -> jax.Array:
        shape = (self.channels,) + self.scale.shape
        re, im = jax.random.normal(key, (2,) + shape, jnp.float32)
        im = jnp.where(self.real_m0, 0.0, im)
        return jax.lax.complex(re * self.scale, im * self.scale)

    def initial(self, key: jax.Array) -> jax.Array:
        return self._draw(key)

    def advance(self, state: jax.Array, key: jax.Array) -> jax.Array:
        return self.rho * state + np.sqrt(1.0 - self.rho**2) * self._draw(key)

    def fields(self, state: jax.Array) -> jax.Array:
        return self.sht.synthesis(state)
