"""The physics world's initial-condition uncertainty: what an analysis of the archive gets wrong, and
perturbations drawn from it.

An ensemble that starts from the archived fields (`analysis.reconstruct_state`) starts
from an *analysis*: the archive is 64 x 32 on four pressure levels, the truth a T42 model state
on sigma layers, so the analysis misses what the archive does not hold. Where the world saved its
exact state (every `state_every_days`), that error is known:

    e_k = truth_k - analysis(archive_k),  k = 1 .. K  (saved-state times of the training split),

a sample of analysis errors in the truth model's own space (modal vorticity, divergence,
temperature variation, log surface pressure; all layers), as an ensemble of data assimilations
(EDA) samples the errors of an operational analysis (Isaksen et al. 2010). `AnalysisErrors` holds
the sample: its mean's zonal part (`bias`; the world's statistics are zonally symmetric, so the
non-zonal part of a mean over K cases is sampling noise) corrects the analysis, and its anomalies
a_k = e_k - mean(e) define the perturbations. The same `ErrorSample` and sampler serve the
operational analogue's model error (`model_error`).

`perturbations` draws member j's perturbation as a random combination of longitude-rotated anomalies,

    p_j = s / sqrt(K - 1) * sum_k w_jk R(phi_jk) a_k,   w_jk ~ N(0, 1), phi_jk ~ U[0, 2 pi),

from fold_in(key, j). It has mean zero and, since a rotation in longitude R(phi) (an exact symmetry
of the zonally symmetric Held-Suarez world) keeps each degree's power, the expected power at every
total wavenumber l, layer and field is s^2 times the sample's (ddof 1); the vertical and
multivariate structure of each error case (its balance between wind, temperature and pressure)
is kept. Rotating the cases gives perturbations at every longitude from K cases: the random-
combination ("ensemble transform") sampling of Evensen 2003, section 4.2, with the rotation added.
s scales the whole error, as operational centres scale their initial perturbations to tune spread.

References: Isaksen, L. et al., 2010, Ensemble of data assimilations at ECMWF, ECMWF Tech. Memo. 636;
Evensen, G., 2003, The Ensemble Kalman Filter: theoretical formulation and practical implementation,
Ocean Dynamics 53, 343-367; Leutbecher, M. and T. N. Palmer, 2008, J. Comput. Phys. 227, 3515-3539.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from dinosaur import primitive_equations

from weatherens.config import TimeRange, WorldConfig
from weatherens.errors import InputError
from weatherens.world import model as world_mod

State: TypeAlias = primitive_equations.State
FIELDS = world_mod.STATE_FIELDS


@dataclasses.dataclass(frozen=True)
class ErrorSample:
    """A sample of K errors of a model state (here: truth - analysis; `model_error`: truth - model).

    times: (K,) the saved-state times of the sample; bias: the zonal (m = 0) part of the mean error,
    a State (fields (layers, m, l), zero where m != 0); anomalies: (K, layers, m, l) per field, the
    errors less their mean. Nondimensional model units, float32.
    """

    times: np.ndarray
    bias: State
    anomalies: State

    @property
    def size(self) -> int:
        return int(self.times.size)

    @classmethod
    def from_errors(cls, times: np.ndarray, errors: list[dict[str, np.ndarray]]) -> ErrorSample:
        """From K errors {field: (layers, m, l)}: the zonal part of their mean and their anomalies."""
        stacked = {k: np.stack([e[k] for e in errors]).astype(np.float64) for k in FIELDS}
        mean = {k: v.mean(0) for k, v in stacked.items()}
        m = _m_values(mean["vorticity"].shape[-2])
        bias = {k: np.where(m[:, None] == 0, v, 0.0).astype(np.float32) for k, v in mean.items()}
        anomalies = {k: (stacked[k] - mean[k]).astype(np.float32) for k in FIELDS}
        return cls(times, _state(bias), _state(anomalies))


def saved_states_in(world: str | Path, cfg: WorldConfig, span: TimeRange) -> tuple[np.ndarray, State]:
    """The world's saved truth states within `span`: times (K,) and a State with leading axis K.

    Raises ValueError naming the store when fewer than 2 fall in `span` (an error sample needs 2)."""
    times, states = world_mod.load_truth_states(world)
    inside = np.flatnonzero((times >= np.datetime64(span.start)) & (times <= np.datetime64(span.end)))
    if inside.size < 2:
        raise InputError(f"{world}: {inside.size} saved physics state(s) in {span.start}..{span.end}; an error "
                         f"sample needs at least 2 (the world saves one every {cfg.state_every_days:g} days)")
    return times[inside], jax.tree.map(lambda x: x[inside], states)


def analysis_errors(world: str | Path, cfg: WorldConfig, span: TimeRange, analysis: Callable,
                    project: Callable | None = None) -> ErrorSample:
    """The sample of analysis errors at the saved-state times of a world within `span`.

    Args:
      world: a physics world store; cfg: its WorldConfig; span: the times to learn from (the training
        split: the errors are never learnt on the inits they will perturb);
      analysis: archived fields at one time (an xr.Dataset, canonical form) -> State on the grid of
        the model that will be perturbed (`analysis.reconstruct_state` with that model);
      project: a truth State -> the same state on that model's grid (`world.interpolate_state`:
        spectral truncation); None when the model is the truth's. Each system's errors are its own:
        a coarser analysis misses more than the truth's model's does.
    Raises ValueError naming the store when fewer than 2 saved states fall in `span`.
    """
    times, states = saved_states_in(world, cfg, span)
    archive = xr.open_zarr(str(world), chunks=None)
    errors = []
    for i, t in enumerate(times):
        estimate = analysis(archive.sel(time=t))
        truth = jax.tree.map(lambda x: x[i], states)
        truth = truth if project is None else project(truth)
        errors.append({k: np.asarray(getattr(truth, k)) - np.asarray(getattr(estimate, k)) for k in FIELDS})
    return ErrorSample.from_errors(times, errors)


def _state(fields: dict) -> State:
    return State(**{k: jnp.asarray(v) for k, v in fields.items()}, sim_time=jnp.float32(0.0))


def _m_values(n_m: int) -> np.ndarray:
    """dinosaur's real-basis zonal wavenumbers along the modal m axis: [0, 1, -1, 2, -2, ...]."""
    i = np.arange(n_m)
    return np.where(i % 2 == 1, (i + 1) // 2, -(i // 2))


def rotate(x: jnp.ndarray, phi) -> jnp.ndarray:
    """Modal coefficients (..., m, l) of a field rotated eastward in longitude by phi (radians).

    In dinosaur's real basis a degree-l field is sum_m c_m cos(m lambda) + s_m sin(m lambda) with c
    at m > 0 and s at -m; f(lambda - phi) has c' = c cos(m phi) - s sin(m phi), s' = s cos(m phi) +
    c sin(m phi). Shifting a nodal field by k grid columns equals rotate(., 2 pi k / nlon).
    """
    m = _m_values(x.shape[-2])
    partner = np.where(m > 0, np.arange(m.size) + 1, np.where(m < 0, np.arange(m.size) - 1, np.arange(m.size)))
    partner = np.minimum(partner, m.size - 1)  # the last positive m of an even-sized axis has no sin partner
    angle = jnp.abs(jnp.asarray(m, x.dtype))[:, None] * phi
    sign = jnp.asarray(-np.sign(m), x.dtype)[:, None]
    return jnp.cos(angle) * x + sign * jnp.sin(angle) * x[..., partner, :]


def degree_power(x: jnp.ndarray) -> jnp.ndarray:
    """Power per total wavenumber: sum over m of the squared coefficients, (..., m, l) -> (..., l).

    dinosaur's real spherical harmonics are orthonormal on the unit sphere, so this is each degree's
    share of the field's mean square times 4 pi (Parseval)."""
    return jnp.sum(x * x, axis=-2)


def perturbations(errors: ErrorSample, key: jax.Array, members, scale: float) -> State:
    """Perturbations of `members` (M,) ids from the error sample: a State with leading axis M (see the
    module doc). Member j's depends on (key, j) alone, so it is the same in any member chunking."""
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.asarray(members, jnp.uint32))
    return _draw_fn(errors.size)(errors.anomalies, keys, jnp.float32(scale))


@functools.lru_cache(maxsize=4)
def _draw_fn(k: int) -> Callable:
    def one(anomalies: State, key, scale):
        k_weight, k_angle = jax.random.split(key)
        w = jax.random.normal(k_weight, (k,), jnp.float32) * scale / np.sqrt(k - 1)
        phi = jax.random.uniform(k_angle, (k,), jnp.float32, 0.0, 2 * np.pi)

        def combine(x):  # (K, ..., m, l) -> (..., m, l)
            rotated = jax.vmap(rotate)(x, phi)
            return jnp.tensordot(w, rotated, axes=1)

        return State(**{f: combine(getattr(anomalies, f)) for f in FIELDS}, sim_time=jnp.float32(0.0))

    return jax.jit(jax.vmap(one, in_axes=(None, 0, None)))


def add(state: State, perturbation: State) -> State:
    """state + perturbation, field by field, on the state's truncation (coefficients beyond it dropped;
    the layers must agree). `perturbation` may carry a leading member axis."""
    def fit(x, like):
        m, l = like.shape[-2:]
        return x[..., :m, :l]

    return dataclasses.replace(state, **{f: getattr(state, f) + fit(getattr(perturbation, f), getattr(state, f))
                                         for f in FIELDS})
