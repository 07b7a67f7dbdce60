"""Ensemble rollouts: members sharded across local devices with pmap, streamed out in lead chunks.

Member j of an initialisation uses the key member_key(init_key(seed, t0), j) (`weatherens.model.noise`),
so its noise depends on the seed, the init time and j alone: the same on 1 device or 8 and in
member chunks of 4 or 400 (tested). The members of a chunk are padded to a multiple of the device
count, laid out (devices, members per device), and advanced `lead_chunk` steps at a time by
`jax.pmap` over devices of a `vmap` over members of a `lax.scan` over steps; the state stays on the
devices between lead chunks and only each chunk's output comes back to the host, so memory does not
grow with lead time. More members than fit go in several member chunks, one after the other.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from weatherens.errors import InputError
from weatherens.model import noise
from weatherens.model.predictor import Predictor

EPOCH_HOURS = np.datetime64("1900-01-01T00", "h")


def init_key(seed: int, init_time) -> jax.Array:
    """The root key of one initialisation: fold_in(key(seed), hours since 1900-01-01)."""
    hours = int((np.datetime64(init_time, "h") - EPOCH_HOURS) / np.timedelta64(1, "h"))
    if hours < 0:
        raise InputError(f"init time {init_time} is before 1900-01-01")
    return jax.random.fold_in(jax.random.key(seed), hours)


def member_keys(root: jax.Array, members: np.ndarray) -> jax.Array:
    return jax.vmap(lambda j: noise.member_key(root, j))(jnp.asarray(members, jnp.uint32))


class EnsembleRunner:
    """Rollouts of one predictor's members, sharded over `devices` (default: all local devices)."""

    def __init__(self, predictor: Predictor, params, devices=None, lead_chunk: int = 4):
        self.predictor, self.lead_chunk = predictor, int(lead_chunk)
        self.devices = list(devices or jax.local_devices())
        self.params = params
        # the grid tables are arguments (broadcast to the devices), not constants of the program
        self._advance = functools.partial(
            jax.pmap(predictor.with_tables(self._advance_device), in_axes=(None, None, 0, 0, None, None),
                     static_broadcasted_argnums=(5,), devices=self.devices), predictor.tables())
        self._place = jax.pmap(lambda *arrays: arrays, devices=self.devices)

    def _advance_device(self, params, carry, keys, forcings, steps: int):
        """One device: members (P,) advanced `steps` steps; forcings (steps + 1, F, lat, lon) from the
        chunk's first input time on. Returns the new carry and (P, steps, C, lat, lon)."""
        step = self.predictor.step

        def member(carry_m, key_m):
            def body(c, n):
                x_prev, x_now, state, count = c
                x_next, state = step(params, x_prev, x_now, forcings[n], forcings[n + 1],
                                     noise.step_key(key_m, count), state)
                return (x_now, x_next, state, count + 1), x_next

            return jax.lax.scan(body, carry_m, jnp.arange(steps))

        return jax.vmap(member)(carry, keys)

    def rollout(self, x_prev: np.ndarray, x_now: np.ndarray, forcings: np.ndarray | jax.Array, keys: jax.Array,
                steps: int, perturb: jax.Array | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (first lead index, states (n, M, C, lat, lon) float32) for consecutive lead chunks.

        x_prev, x_now: (C, lat, lon) the initial states at t0 - dt and t0 (physical units);
        forcings: (steps + 2, F, lat, lon) at t0 - dt, t0, ..., t0 + steps dt; keys: (M,) member keys;
        perturb: (M, C, lat, lon) initial-condition perturbations added to both initial states, or None.
        """
        m, d = keys.shape[0], len(self.devices)
        per = -(-m // d)
        pad = per * d - m
        all_keys = jnp.concatenate([keys, keys[jnp.zeros(pad, jnp.int32)]]) if pad else keys  # padding: discarded
        delta = perturb if perturb is not None else jnp.zeros((m,) + x_now.shape, jnp.float32)
        delta = jnp.concatenate([delta, jnp.zeros((pad,) + delta.shape[1:], delta.dtype)]) if pad else delta
        xp = jnp.asarray(x_prev, jnp.float32)[None] + delta
        xn = jnp.asarray(x_now, jnp.float32)[None] + delta
        state = jax.vmap(self.predictor.initial_noise)(all_keys)
        count = jnp.zeros((per * d,), jnp.int32)

        def shard(a):  # (devices, members per device, ...): pmap lays the first axis over the devices
            return a.reshape((d, per) + a.shape[1:])

        # placed by a pmap, so the first chunk's carry is laid out as the later chunks' (one compile, not two)
        carry, key_shards = self._place(tuple(shard(a) for a in (xp, xn, state, count)), shard(all_keys))
        forcings = jnp.asarray(forcings, jnp.float32)
        for start in range(0, steps, self.lead_chunk):
            n = min(self.lead_chunk, steps - start)
            carry, out = self._advance(self.params, carry, key_shards, forcings[start + 1 : start + n + 2], n)
            host = np.asarray(out).reshape((per * d, n) + out.shape[3:])[:m]  # (M, n, C, lat, lon)
            yield start, np.swapaxes(host, 0, 1)
