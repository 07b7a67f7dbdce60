"""The model variants of scripts/diagnose_drift.py: Predictor.step with switches for its two noise
sources, the parameters with the conditional norms' shift zeroed, and a jitted member rollout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from weatherens import grid
from weatherens.model import increment, noise


def make_step(p, use_z: bool, use_fields: bool):
    """step(params, x_prev, x_now, f_now, f_next, key, noise_state) -> (x_next, noise_state), as
    Predictor.step, but z multiplied by 0 unless use_z and noise fields by 0 unless use_fields (the
    AR(1) state still advances, so the keys stay those of the shipped model)."""
    inc_filter = getattr(p, "increment_filter", None)
    conserved = np.asarray(getattr(p, "conserved", np.zeros(0, np.int32)))  # older checkpoints: none

    def step(params, x_prev, x_now, f_now, f_next, key, state):
        z = noise.latent_vector(jax.random.fold_in(key, 0), p.cfg.noise_dim)
        if not use_z:
            z = jnp.zeros_like(z)
        parts = [p.normalize(x_prev), p.normalize(x_now), f_now * p.forcing_scale, f_next * p.forcing_scale,
                 p.constants]
        if p.noise is not None:
            state = p.noise.advance(state, jax.random.fold_in(key, 1))
            fields = p.noise.fields(state)
            parts.append(fields if use_fields else jnp.zeros_like(fields))
        net = nnx.merge(p.graphdef, params)
        residual = net(jnp.concatenate(parts, axis=0), z)
        if inc_filter is not None:
            residual = inc_filter(residual)
        return increment.keep_global_means(x_now + p.residual_std * residual, x_now, conserved, p.lat), state

    return step


def zero_shift(params):
    """A copy of params with every leaf whose path ends in 'shift' set to zero; returns (params, count)."""
    flat = nnx.to_flat_state(params)
    count = 0
    new = []
    for path, leaf in flat:
        if path[-1] == "shift":
            count += 1
            leaf = leaf.replace(jnp.zeros_like(leaf[...]))
        new.append((path, leaf))
    return nnx.from_flat_state(new), count


VARIANT_FLAGS = {"shipped": (True, True), "noise_off": (False, False), "fields_off": (True, False),
                 "shift_off": (True, True)}


def make_rollout(p, step, sel: np.ndarray, sp_idx: int):
    """jit(rollout)(params, x_prev (B,C,..), x_now, forcings (S+2,F,..), keys (B,), state (B,..), steps)
    -> (selected channels (S, B, K, lat, lon), global-mean sp (S, B), non-finite count (S, B), carry)."""

    def member(params, xp, xn, forc, key, state, start, steps):
        def body(c, n):
            a, b, s = c
            nxt, s = step(params, a, b, forc[n], forc[n + 1], noise.step_key(key, start + n), s)
            return (b, nxt, s), (nxt[sel], grid.area_mean(nxt[sp_idx], p.lat), jnp.sum(~jnp.isfinite(nxt)))

        return jax.lax.scan(body, (xp, xn, state), jnp.arange(steps))

    def run(params, xp, xn, forc, keys, state, start, steps):
        carry, out = jax.vmap(member, in_axes=(None, 0, 0, None, 0, 0, None, None))(
            params, xp, xn, forc, keys, state, start, steps)
        return carry, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), out)

    return jax.jit(run, static_argnums=(7,))
