"""One model step in physical units: normalize -> network -> residual -> unnormalize.

    x(t + dt) = x(t) + sigma_res * net([ (x(t - dt) - mu) / sigma, (x(t) - mu) / sigma,
                                        forcings(t), forcings(t + dt), constants, noise fields ], z)

with mu, sigma the per-channel mean and standard deviation and sigma_res the standard deviation of
the 6-hour difference (`data.stats`), as GraphCast predicts normalized residuals (Lam et al. 2023).
Constants: sin and cos of latitude and longitude, and the static fields (orography, land-sea mask)
standardised with their area-weighted mean and std. Optionally the network's output is band-limited
before it is added and chosen channels keep their global mean (`model.increment`).

`Predictor` holds what is fixed (grid, channels, statistics, constants, the network's graph) and
its methods are pure functions of explicit parameters, states and PRNG keys, for one member
(no batch dims): vmap them over members and samples.

The spherical transforms' tables (float32 (M + 1, L + 1, lat) each, 1.4 GiB apiece at 0.25 deg with
L = 719) and the constant features are constants of the step. A jitted function that calls the
step folds them into its program unless it is wrapped by `with_tables` and given `tables()` as its
first argument: then they are arguments of the program (compile time and program size do not
grow with them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from weatherens import grid
from weatherens.config import ZONAL_MATMUL, ModelConfig
from weatherens.data import forcings as forcings_lib
from weatherens.model import increment, noise
from weatherens.model.layers import TransformSlot
from weatherens.model.network import SphericalForecaster
from weatherens.sphere.sht import SphericalHarmonicTransform


def constant_features(lat: np.ndarray, lon: np.ndarray, static: np.ndarray) -> np.ndarray:
    """(4 + S, lat, lon) float32: sin/cos latitude, sin/cos longitude, standardised static fields."""
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    geometry = [np.sin(la), np.cos(la), np.sin(lo), np.cos(lo)]
    standardised = []
    for field in np.asarray(static, dtype=np.float64).reshape(-1, len(lat), len(lon)):
        mean = grid.area_mean(field, lat)
        std = np.sqrt(grid.area_mean((field - mean) ** 2, lat))
        standardised.append((field - mean) / (std if std > 0 else 1.0))
    return np.stack(geometry + standardised).astype(np.float32)


class Predictor:
    """The forecaster for one grid, channel order and set of statistics.

    Args:
      cfg: the model section of the config.
      channels: channel names in model order ('variable@level' or 'variable'), C of them.
      forcings: forcing names (F), in the order the sampler stacks them.
      lat, lon: grid coordinates in degrees (latitude ascending).
      mean, std, residual_std: (C,) statistics in physical units.
      static: (S, lat, lon) time-invariant fields in physical units; S may be 0.
    """

    def __init__(self, cfg: ModelConfig, channels: Sequence[str], forcings: Sequence[str], lat, lon,
                 mean, std, residual_std, static):
        self.cfg = cfg
        self.channels, self.forcings = tuple(channels), tuple(forcings)
        self.lat, self.lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        stats = [np.asarray(a, np.float64) for a in (mean, std, residual_std)]
        for name, a in zip(("mean", "std", "residual_std"), stats):
            if a.shape != (len(self.channels),) or not np.all(np.isfinite(a)):
                raise ValueError(f"normalization {name}: expected {len(self.channels)} finite values, got {a}")
            if name != "mean" and not np.all(a > 0):
                raise ValueError(f"normalization {name}: must be positive, got {a}")
        self.mean, self.std, self.residual_std = (jnp.asarray(a, jnp.float32)[:, None, None] for a in stats)
        # forcings enter as O(1) numbers: insolation in units of the solar constant
        scale = [1.0 / forcings_lib.SOLAR_CONSTANT if f == "toa_incident_solar_radiation" else 1.0
                 for f in self.forcings]
        self.forcing_scale = jnp.asarray(scale, jnp.float32)[:, None, None]
        self.static = np.asarray(static, np.float32).reshape(-1, self.lat.size, self.lon.size)
        self.constants = jnp.asarray(constant_features(self.lat, self.lon, self.static))
        zonal_matmul = ZONAL_MATMUL[cfg.zonal_transform]
        self.sht = SphericalHarmonicTransform(self.lat, self.lon.size, cfg.lmax or None, zonal_matmul=zonal_matmul)
        self._network_transform = TransformSlot(self.sht)  # shared by the network's spectral convolutions
        self.noise = (noise.SphericalNoise(self.sht, cfg.noise_fields, cfg.noise_field_degree, cfg.noise_field_rho)
                      if cfg.noise_fields else None)
        self.increment_filter = (increment.IncrementFilter(self.lat, self.lon.size, cfg.increment_lmax, cfg.increment_taper,
                                                           zonal_matmul)
                                 if cfg.increment_lmax else None)
        unknown = sorted(set(cfg.conserve_global_mean) - set(self.channels))
        if unknown:
            raise ValueError(f"model.conserve_global_mean names {unknown}, which are not among the channels {self.channels}")
        self.conserved = np.asarray([self.channels.index(c) for c in cfg.conserve_global_mean], np.int32)
        c, f = len(self.channels), len(self.forcings)
        self.in_channels = 2 * c + 2 * f + self.constants.shape[0] + cfg.noise_fields
        self.graphdef, _ = nnx.split(nnx.eval_shape(lambda: self._network(jax.random.key(0))))

    def _network(self, key: jax.Array) -> SphericalForecaster:
        return SphericalForecaster(self.in_channels, len(self.channels), self.cfg, self._network_transform,
                                   rngs=nnx.Rngs(params=key))

    def tables(self) -> dict:
        """The step's grid-sized constants, for `with_tables`: the spherical transforms (pytrees whose
        leaves are their tables) under 'network' and 'increment', and the constant input features."""
        out = {"network": self.sht, "constants": self.constants}
        if self.increment_filter is not None:
            out["increment"] = self.increment_filter.sht
        return out

    def _use_tables(self, tables: dict) -> None:
        self.sht = self._network_transform.transform = tables["network"]
        self.constants = tables["constants"]
        if self.noise is not None:
            self.noise.sht = tables["network"]
        if self.increment_filter is not None:
            self.increment_filter.sht = tables["increment"]

    def with_tables(self, fn: Callable) -> Callable:
        """fn(*args) -> g(tables, *args): fn with this predictor's grid-sized constants taken from the argument.

        Jit g and call it as g(predictor.tables(), *args): the transforms' tables and the constant
        features enter the program as arguments instead of constants folded into it. While g runs
        (traces) the predictor's step uses the given tables; its own are back when g returns, so
        calls outside g see them.
        """
        def g(tables: dict, *args, **kwargs):
            own = self.tables()
            self._use_tables(tables)
            try:
                return fn(*args, **kwargs)
            finally:
                self._use_tables(own)

        return g

    def init_params(self, key: jax.Array) -> nnx.State:
        """Fresh network parameters from `key`."""
        return nnx.split(self._network(key))[1]

    def normalize(self, x: jax.Array | np.ndarray) -> jax.Array:
        """(..., C, lat, lon) physical -> standardised."""
        return cast(jax.Array, (x - self.mean) / self.std)  # jax arrays: the statistics are

    def initial_noise(self, member_key: jax.Array) -> jax.Array:
        """The noise-field state of a member before its first step; shape (0,) without noise fields."""
        if self.noise is None:
            return jnp.zeros((0,), jnp.float32)
        return self.noise.initial(noise.initial_key(member_key))

    def step(self, params: nnx.State, x_prev: jax.Array, x_now: jax.Array, forcing_now: jax.Array,
             forcing_next: jax.Array, key: jax.Array, noise_state: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One member's step: (x(t + dt), next noise state).

        x_prev, x_now: (C, lat, lon) physical units; forcing_now, forcing_next: (F, lat, lon);
        key: this member's key for this step (`noise.step_key`); noise_state: from `initial_noise`
        or the previous step.
        """
        z = noise.latent_vector(jax.random.fold_in(key, 0), self.cfg.noise_dim)
        parts = [self.normalize(x_prev), self.normalize(x_now), forcing_now * self.forcing_scale,
                 forcing_next * self.forcing_scale, self.constants]
        if self.noise is not None:
            noise_state = self.noise.advance(noise_state, jax.random.fold_in(key, 1))
            parts.append(self.noise.fields(noise_state))
        network = nnx.merge(self.graphdef, params)
        residual = network(jnp.concatenate(parts, axis=0), z)
        if self.increment_filter is not None:
            residual = self.increment_filter(residual)
        x_next = increment.keep_global_means(x_now + self.residual_std * residual, x_now, self.conserved, self.lat)
        return x_next, noise_state
