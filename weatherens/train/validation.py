"""Long-lead validation during training: is the ensemble still calibrated and in its climate?

Every `train.validate_every` steps the trainer runs an ensemble of `train.validation_members`
members from `train.validation_inits` init times spread evenly over the validation split and
scores it at `train.validation_lead_hours` (default 1, 5 and 10 days), per channel, area-weighted
(`grid.latitude_weights`, as WeatherBench 2):

- fair CRPS (Ferro 2014; `losses.crps_fair`) and its ratio to the fair CRPS of a climatological
  ensemble: `climatology_members` states drawn once from the training split at random, whatever
  their season or time of day (right for the physics world, which has neither; on ERA5 this
  climatology is broader than WeatherBench 2's, so the ratio is flattering), scored against the
  same truths. A calibrated ensemble approaches 1 from below;
- the debiased spread-skill ratio sqrt((M + 1) / M) * spread / RMSE (Fortin et al. 2014;
  `verify.metrics.spread_skill`), spread from the unbiased member variance;
The members are the training objective's own rollout (`train.step.Objective.ensemble_rollout`).
- the spectrum ratio: the members' mean power per total wavenumber over the truth's
  (`sphere.sht.power_spectrum`), as the mean ratio at l = 1-3 and the largest |ratio - 1| over l >= 4.

The checkpoint is chosen by `score`: the mean over channels and leads of CRPS / climatology's.
Member keys: fold_in(fold_in(key(seed), init index), member), fixed across validations, so two
validations differ by the weights only.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from weatherens import grid
from weatherens.config import Experiment
from weatherens.data import era5, forcings, pipeline
from weatherens.errors import InputError
from weatherens.model import noise
from weatherens.train import losses
from weatherens.train.step import Objective
from weatherens.verify.metrics import spread_skill

LARGE_SCALES = 3  # degrees 1..3: the "planetary" band of the spectrum ratio


@dataclasses.dataclass(frozen=True)
class ValidationSet:
    """Arrays of one long-lead validation, physical units, float32. N inits, S steps, K leads scored."""

    init_times: np.ndarray  # (N,) datetime64[ns]
    inputs: np.ndarray  # (N, 2, C, lat, lon): states at t0 - dt and t0
    forcings: np.ndarray  # (N, S + 2, F, lat, lon): at t0 - dt ... t0 + S dt
    truth: np.ndarray  # (N, K, C, lat, lon): at the scored leads
    lead_steps: tuple[int, ...]  # (K,) model steps of the scored leads
    climatology: np.ndarray  # (K_clim, C, lat, lon): the climatological ensemble's members


def build_set(exp: Experiment, store: str, channels: tuple[str, ...], climatology_members: int = 16) -> ValidationSet:
    """The validation set of `exp` (train.validation_inits inits spread over the validation split)."""
    cfg, dt = exp.train, exp.data.timestep_hours
    bad = [h for h in cfg.validation_lead_hours if h % dt]
    if bad:
        raise InputError(f"train.validation_lead_hours {bad}: not multiples of data.timestep_hours = {dt}")
    lead_steps = tuple(h // dt for h in cfg.validation_lead_hours)
    steps = max(lead_steps)
    variables, levels = exp.data.variables, exp.data.levels
    ds = era5.open(store, variables, levels, exp.data.validation.as_slice())
    if pipeline.channel_names(ds, variables) != tuple(channels):
        raise InputError(f"{store}: validation channels {pipeline.channel_names(ds, variables)} differ from the model's")
    times = np.asarray(ds["time"].values, "datetime64[ns]")
    last = times.size - 1 - steps
    if last < 1:
        raise InputError(f"{store}: the validation split {exp.data.validation} holds {times.size} times, too few for "
                         f"a {steps * dt} h forecast (train.validation_lead_hours)")
    idx = np.unique(np.linspace(1, last, cfg.validation_inits).round().astype(int))
    window = idx[:, None] + np.arange(-1, steps + 1)[None, :]  # (N, S + 2)
    states = pipeline.read_states(ds, variables, times[np.unique(window)])
    where = np.searchsorted(np.unique(window), window)
    lat, lon = ds["latitude"].values, ds["longitude"].values
    if exp.data.forcings:
        f = forcings.compute(times[window].reshape(-1), lat, lon, exp.data.forcings)
        f = f.reshape(window.shape + f.shape[1:]).astype(np.float32)
    else:
        f = np.zeros(window.shape + (0, lat.size, lon.size), np.float32)
    train = era5.open(store, variables, levels, exp.data.train.as_slice())
    train_times = np.asarray(train["time"].values, "datetime64[ns]")
    rng = np.random.default_rng([exp.train.seed, 2])
    picks = np.sort(rng.choice(train_times.size, size=min(climatology_members, train_times.size), replace=False))
    return ValidationSet(
        init_times=times[idx], inputs=states[where[:, :2]], forcings=f,
        truth=states[where[:, 1 + np.asarray(lead_steps)]], lead_steps=lead_steps,
        climatology=pipeline.read_states(train, variables, train_times[picks]))


class LongLeadValidation:
    """Scores weights on a `ValidationSet` (module docstring). One compiled rollout, reused."""

    def __init__(self, objective: Objective, data: ValidationSet, members: int, seed: int, hours_per_step: int):
        if members < 2:
            raise InputError(f"train.validation_members = {members}: spread and fair CRPS need at least 2")
        self.objective, self.predictor, self.data, self.members = objective, objective.predictor, data, members
        self.lead_hours = tuple(int(s) * hours_per_step for s in data.lead_steps)
        self.keys = jax.vmap(lambda i: jax.vmap(lambda j: noise.member_key(
            jax.random.fold_in(jax.random.key(seed), i), j))(jnp.arange(members)))(jnp.arange(len(data.init_times)))
        tables = self.predictor.tables()  # arguments of the programs, not constants in them
        self._forecast = functools.partial(jax.jit(self.predictor.with_tables(self._members_at_leads)), tables)
        self._scores = functools.partial(jax.jit(self.predictor.with_tables(self._score_one)), tables)
        clim = jnp.asarray(data.climatology)
        per_init = jax.jit(jax.vmap(lambda truth: self._crps(clim, truth)))  # over leads: (K, C)
        self.climatology_crps = np.mean([np.asarray(per_init(jnp.asarray(t)), np.float64) for t in data.truth],
                                        axis=0)

    def _crps(self, ensemble: jax.Array, truth: jax.Array) -> jax.Array:
        """Area-mean fair CRPS per channel: ensemble (M, C, lat, lon), truth (C, lat, lon) -> (C,)."""
        return grid.area_mean(losses.crps_fair(ensemble, truth, member_axis=0), self.predictor.lat)

    def _members_at_leads(self, params, inputs, forcing, keys):
        """(M, K, C, lat, lon): every member's states at the scored leads from one init."""
        trajectory = self.objective.ensemble_rollout(params, inputs, forcing, keys, max(self.data.lead_steps))
        return jnp.swapaxes(trajectory[jnp.asarray(self.data.lead_steps) - 1], 0, 1)

    def _score_one(self, ensemble, truth):
        """Sums for one init: ensemble (M, K, C, lat, lon), truth (K, C, lat, lon) -> per (K, C): CRPS,
        ensemble variance, squared error of the mean; and spectra (K, C, L + 1) of members and truth."""
        lat, sht = self.predictor.lat, self.predictor.sht
        crps = jax.vmap(self._crps, in_axes=(1, 0))(ensemble, truth)
        variance = grid.area_mean(jnp.var(ensemble, axis=0, ddof=1), lat)
        error = grid.area_mean(jnp.square(ensemble.mean(axis=0) - truth), lat)
        member_power = sht.power_spectrum(ensemble).mean(axis=0)
        return crps, variance, error, member_power, sht.power_spectrum(truth)

    def __call__(self, params) -> dict:
        """Scores of `params`: per lead (hours) and channel, and the selection `score`."""
        sums = None
        for n in range(len(self.data.init_times)):
            ensemble = self._forecast(params, jnp.asarray(self.data.inputs[n]), jnp.asarray(self.data.forcings[n]),
                                      self.keys[n])
            one = [np.asarray(a, np.float64) for a in self._scores(ensemble, jnp.asarray(self.data.truth[n]))]
            sums = one if sums is None else [s + o for s, o in zip(sums, one)]
        assert sums is not None
        crps, variance, error, member_power, truth_power = (s / len(self.data.init_times) for s in sums)
        return summarize(self.predictor.channels, self.lead_hours, self.members, crps, self.climatology_crps,
                         variance, error, member_power, truth_power)


def summarize(channels, lead_hours, members: int, crps, climatology_crps, variance, error,
              member_power, truth_power) -> dict:
    """The metrics record from init-mean sums, each (K, C) (spectra (K, C, L + 1)): per lead and channel
    `crps`, `crps_vs_climatology`, `ssr` (debiased), `spectrum_large` (mean member / truth power at
    l = 1-3) and `spectrum_worst` (max |member / truth - 1| over l >= 4), and `score`."""
    ratio_crps = crps / climatology_crps
    ssr = np.asarray(spread_skill(variance, error, members).ssr_debiased)
    power = member_power / truth_power
    large = power[..., 1:LARGE_SCALES + 1].mean(axis=-1)
    worst = np.abs(power[..., LARGE_SCALES + 1:] - 1.0).max(axis=-1)
    out: dict = {"score": float(ratio_crps.mean()), "leads_h": [int(h) for h in lead_hours]}
    for name, table in (("crps", crps), ("crps_vs_climatology", ratio_crps), ("ssr", ssr),
                        ("spectrum_large", large), ("spectrum_worst", worst)):
        out[name] = {f"{h}h": {c: float(v) for c, v in zip(channels, row)} for h, row in zip(lead_hours, table)}
    return out
