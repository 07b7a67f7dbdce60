"""Initial-condition perturbations, per member, from the member's own key.

- `none`: model noise only.
- `gaussian`: smooth Gaussian random fields on the sphere (spectrum exp(-l(l+1) / (2 d^2)), unit
  variance, `noise.SphericalNoise`), times `amplitude` x the channel's standard deviation, drawn from
  the member's perturbation key.
- `bred`: hemispheric-centred bred vectors as in the Huge Ensembles (HENS) work (Mahesh et al. 2024,
  "Huge Ensembles Part I", arXiv:2408.03100, after Toth & Kalnay 1993): a random perturbation
  added `cycles` steps before t0 is grown by the model (perturbed minus control, both with the same
  model noise) and rescaled after every step, separately in each hemisphere, to `amplitude` (RMS over
  the hemisphere's area and the channels, in units of each channel's standard deviation). Members come
  in +/- pairs (2k: +b_k, 2k + 1: -b_k), centring the ensemble on the analysis; an odd last member gets +b.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from weatherens import grid
from weatherens.config import PERTURBATIONS
from weatherens.model import noise
from weatherens.model.predictor import Predictor

KINDS = PERTURBATIONS


def gaussian(predictor: Predictor, keys: jax.Array, amplitude: float, degree: float = 10.0) -> jax.Array:
    """(M, C, lat, lon) smooth Gaussian perturbations, amplitude x std per channel."""
    fields = noise.SphericalNoise(predictor.sht, len(predictor.channels), degree, 0.0)
    draw = jax.vmap(lambda k: fields.fields(fields.initial(noise.perturbation_key(k))))
    return amplitude * predictor.std * draw(keys)


def hemispheric_rescale(delta: jax.Array, predictor: Predictor, amplitude: float) -> jax.Array:
    """delta (..., C, lat, lon) scaled so that each hemisphere's normalised RMS is `amplitude`
    (rows at the equator count as northern)."""
    lat = predictor.lat
    north = lat >= 0
    z2 = jnp.square(delta / predictor.std).mean(axis=-3)  # (..., lat, lon)
    scale_n = amplitude / jnp.sqrt(grid.area_mean(z2, lat, north))
    scale_s = amplitude / jnp.sqrt(grid.area_mean(z2, lat, ~north))
    north_rows = jnp.asarray(north)[:, None]
    scale = jnp.where(north_rows, scale_n[..., None, None], scale_s[..., None, None])
    return delta * scale[..., None, :, :]


def bred_vectors(predictor: Predictor, params, history: np.ndarray | jax.Array, forcings: np.ndarray | jax.Array,
                 keys: jax.Array, amplitude: float) -> jax.Array:
    """(M, C, lat, lon) +/- pairs of bred vectors valid at t0.

    history: (cycles + 2, C, lat, lon) states at t0 - (cycles + 1) dt ... t0; forcings: the same times
    (F channels); keys: (M,) member keys (pair k breeds from the key of member 2k).
    """
    cycles = history.shape[0] - 2
    if cycles < 1:
        raise ValueError("bred vectors need at least one breeding cycle (history of 3 states)")
    m = keys.shape[0]
    pair_keys = keys[0::2]
    history, forcings = jnp.asarray(history, jnp.float32), jnp.asarray(forcings, jnp.float32)

    def breed(key):
        delta = hemispheric_rescale(gaussian(predictor, key[None], 1.0)[0], predictor, amplitude)
        state = predictor.initial_noise(key)
        for c in range(cycles):  # advance from (history[c], history[c + 1]) to time c + 2
            step_key = noise.step_key(noise.perturbation_key(key), c)
            control, _ = predictor.step(params, history[c], history[c + 1], forcings[c + 1], forcings[c + 2],
                                        step_key, state)
            perturbed, _ = predictor.step(params, history[c] + delta, history[c + 1] + delta, forcings[c + 1],
                                          forcings[c + 2], step_key, state)
            delta = hemispheric_rescale(perturbed - control, predictor, amplitude)
        return delta

    bred = jax.jit(predictor.with_tables(jax.vmap(breed)))(predictor.tables(), pair_keys)  # (ceil(M / 2), C, lat, lon)
    signs = jnp.where(jnp.arange(m) % 2 == 0, 1.0, -1.0)[:, None, None, None]
    return bred[jnp.arange(m) // 2] * signs
