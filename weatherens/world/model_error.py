"""The operational analogue's model error: what its cheaper model gets wrong in one archive interval,
and random draws of it added as the ensemble runs.

The analogue integrates a coarser, longer-stepping copy of the world's model, so even from the exact
state it drifts from the truth. Where the world saved its exact state s_k, one archive interval
(6 h) of both models gives that error in the cheaper model's own space:

    e_k = T(M_truth(s_k)) - M_cheap(T(s_k)),  k = 1 .. K  (saved-state times of the training split),

with T the spectral truncation to the cheaper model's grid: the difference between a high- and a
low-resolution forecast over one interval, the sample Hamill & Whitaker (2005) draw additive noise
from to represent unresolved scales. The analogue adds, at the start of every interval after the
first (the first carries the initial perturbation),

    x_{n+1} = M_cheap(x_n + q_n),  q_n = s_q / sqrt(K - 1) * sum_k w_k R(phi_k) (e_k - mean(e)),

drawn by the sampler of `initial_uncertainty` (random combinations of longitude-rotated anomalies:
mean zero, s_q^2 times the sample's power at every degree, layer and field), independently per
interval, member and init; s_q = 1 is the sample at its own size. The mean of e (the cheaper model's
systematic tendency error) is not added: it is the analogue's own bias, as an operational model's is.
Stochastic model perturbations are what operational ensembles add for model error (SPPT, SKEB:
Leutbecher et al. 2017); additive draws of measured model error are their simplest form.

References: Hamill, T. M. and J. S. Whitaker, 2005, Accounting for the error due to unresolved scales
in ensemble data assimilation, Mon. Wea. Rev. 133, 3132-3147; Leutbecher, M. et al., 2017,
Stochastic representations of model uncertainties at ECMWF, Q. J. R. Meteorol. Soc. 143, 2315-2339.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from dinosaur import primitive_equations, time_integration

from weatherens.config import TimeRange, WorldConfig
from weatherens.world import initial_uncertainty
from weatherens.world import model as world_mod

State: TypeAlias = primitive_equations.State
FIELDS = world_mod.STATE_FIELDS
_STREAM = 0x6D6F64  # fold_in tag separating the model-error draws from the initial perturbations


def model_errors(world: str | Path, cfg: WorldConfig, span: TimeRange,
                 model: world_mod.TruthModel) -> initial_uncertainty.ErrorSample:
    """The one-interval errors of `model` against the world's own model at the saved-state times in
    `span` (see the module doc), in `model`'s space (nondimensional, modal, float32).

    `model` must archive at the world's interval (`world.truth_model` of `cfg` with another resolution
    or time step). Raises ValueError naming the store when fewer than 2 saved states fall in `span`.
    """
    truth = world_mod.truth_model(cfg)
    times, states = initial_uncertainty.saved_states_in(world, cfg, span)
    errors = []
    for i in range(times.size):
        state = _one(states, i)
        reference = world_mod.interpolate_state(truth.advance(state), truth, model)
        forecast = model.advance(world_mod.interpolate_state(state, truth, model))
        errors.append({k: np.asarray(getattr(reference, k)) - np.asarray(getattr(forecast, k)) for k in FIELDS})
    return initial_uncertainty.ErrorSample.from_errors(times, errors)


def noise(sample: initial_uncertainty.ErrorSample, key: jax.Array, members, intervals, scale: float) -> State:
    """Additive model-error draws for `members` (M,) ids and archive `intervals` (F,) indices (0 = the
    interval from the init): a State with leading axes (M, F), zero at interval 0. Member j's draw at
    interval n depends on (key, j, n) alone, so it is the same in any member or lead chunking."""
    draws = [initial_uncertainty.perturbations(sample, jax.random.fold_in(jax.random.fold_in(key, _STREAM), n),
                                               members, scale * (n > 0)) for n in np.asarray(intervals).tolist()]
    return jax.tree.map(lambda *x: jnp.stack(x, axis=1), *draws)


@functools.lru_cache(maxsize=16)
def trajectory_fn(model: world_mod.TruthModel, frames: int) -> Callable:
    """Jitted: (M states, noise (M, frames)) -> (M states `frames` intervals on, fields dict (M, frames, ...)),
    each interval x -> M(x + q): the model-error draw added at the interval's start."""
    interval = time_integration.repeated(model.step, model.steps_per_archive)

    def one(state, draws):
        def body(x, q):
            x = interval(initial_uncertainty.add(x, q))
            return x, model.archive_fields(x)

        return jax.lax.scan(body, state, draws)

    return jax.jit(jax.vmap(one))


def _one(states: State, i: int) -> State:
    return jax.tree.map(lambda x: x[i], states)
