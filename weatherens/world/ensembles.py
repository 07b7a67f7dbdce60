"""Physics ensembles of the physics world, written as WeatherBench 2 forecasts like the ML ensemble.

The yardsticks an ML ensemble trained on the world's archive is measured against:
* `archived_fields_ensemble`, the operational analogue (an IFS-ENS analogue): a cheaper Held-Suarez
  model (the demo's: T31 with a 60-min step on the world's sigma layers) started from its analysis of
  the archived fields (`analysis.analysis_state`: `analysis.reconstruct_state`, bias-corrected), its
  members perturbed with draws from that analysis's own errors (`initial_uncertainty`: an EDA-like error sample learnt
  on the training split) and, every 6 h, from its model's own errors (`model_error`), with factors
  tuned for spread = error on validation inits;
* `predictability_limit_ensemble`, the predictability limit: the world's own model at the truth's
  resolution from the same analysis and the same perturbations: no model error, only the initial
  uncertainty the archive leaves;
* `perfect_model_ensemble`, a diagnostic of intrinsic predictability, not a yardstick: the exact
  saved truth state plus white-noise temperature (Leutbecher & Palmer 2008's simplest
  perturbation), which no forecaster from the archive could start from.

Every ensemble draws member j's perturbation from fold_in(init_key(seed, t0), j), so members are
exchangeable and member j is the same in any member chunking; members advance together
(`jax.vmap`, `member_chunk` at a time, `lead_chunk` archive intervals per call) and are written
through `output.ForecastWriter` (resumable: whole inits are skipped): dims (time,
prediction_timedelta, number, [level,] latitude, longitude), leads archive_hours ... lead_hours, the
world's variables, levels, units and attributes.

References: Held, I. M. and M. J. Suarez, 1994, BAMS 75(10), 1825-1830 (the forcing); Leutbecher, M.
and T. N. Palmer, 2008, Ensemble forecasting, J. Comput. Phys. 227, 3515-3539; Kochkov, D. et al.,
2024, Neural general circulation models for weather and climate, Nature 632, 1060-1066 (dinosaur).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from dinosaur import primitive_equations, scales, time_integration
from tqdm import tqdm

from weatherens import config as config_mod
from weatherens import grid as grid_mod
from weatherens.config import DataConfig, DemoConfig, TimeRange, WorldConfig
from weatherens.data import names
from weatherens.errors import InputError, WeatherensError
from weatherens.infer import ensemble, output
from weatherens.world import analysis, initial_uncertainty, model_error
from weatherens.world import model as world_mod
from weatherens.world import store as world_store

REFERENCES = ("Held & Suarez 1994, BAMS 75(10), 1825-1830; Leutbecher & Palmer 2008, J. Comput. Phys. 227, "
              "3515-3539; Kochkov et al. 2024, Nature 632, 1060-1066 (dinosaur / NeuralGCM)")
State: TypeAlias = primitive_equations.State


def perfect_model_ensemble(world: str | Path, init_times, members: int, lead_hours: int, out: str | Path, *,
                           amplitude_k: float = 0.1, seed: int = 0, member_chunk: int | None = None, lead_chunk: int = 4,
                           progress: bool = True) -> Path:
    """The exact-truth diagnostic: the world's saved truth state + white-noise temperature, the world's model.

    Args:
      world: a physics world store (`weatherens world`); init_times: (T,) times at which the world
        saved its full state (every `state_every_days`), anything `np.datetime64` accepts.
      members: M >= 1; lead_hours: a positive multiple of the world's `archive_hours`.
      out: the forecast store; amplitude_k: std (K) of the temperature noise per nodal point;
      seed: root of the member keys; lead_chunk: archive intervals per call; member_chunk: members
        per vmap, default 1 on CPU (batching members was no faster per member there:
        docs/benchmarks.md), else 16.
    Returns `out`, complete. Raises ValueError naming the store if an init time has no saved state.
    """
    world = Path(world)
    cfg = world_store.world_config(world)
    inits = _times(init_times)
    saved = xr.open_zarr(str(world), group=world_mod.STATE_GROUP, chunks=None)  # every world has one
    state_times = saved["state_time"].values
    missing = [t for t in inits if t not in state_times]
    if missing:
        raise InputError(f"{world}: no saved physics state at {_fmt(missing)}; perfect-model ensembles start from "
                         f"saved states, available at {_fmt(state_times)} (every {cfg.state_every_days:g} days)")

    def initial(t0):  # as world.load_truth_states, one state only
        one = saved.sel(state_time=t0)
        return State(**{k: jnp.asarray(one[k].values) for k in world_mod.STATE_FIELDS},
                     sim_time=jnp.asarray(one["sim_time"].values, jnp.float32))

    if not amplitude_k >= 0:
        raise InputError(f"amplitude_k={amplitude_k}: must be >= 0")
    _check_run(world, cfg, members, lead_hours, member_chunk or 1, lead_chunk)
    model = world_mod.truth_model(cfg)

    def perturb(state, t0, ids):
        return member_states(model, state, seed, t0, ids, amplitude_k)

    provenance = {"kind": "perfect_model", "member_source": f"truth state, {cfg.resolution}/L{cfg.layers}",
                  "amplitude_k": amplitude_k}
    label = f"white-noise temperature {amplitude_k:g} K"
    description = f"{label} std per nodal point of the model grid, member j from fold_in(init_key(seed, init time), j)"
    return _run(world, cfg, model, cfg, initial, perturb, inits, members, lead_hours, out, label, description, seed,
                member_chunk, lead_chunk, provenance, progress)


def archived_fields_ensemble(world: str | Path, init_times, members: int, lead_hours: int, out: str | Path, *,
                             resolution: str = DemoConfig().analogue_resolution, timestep_minutes: float | None = None,
                             perturbation_scale: float = 1.0, model_error_scale: float = 0.0,
                             error_span: TimeRange = DataConfig().train, seed: int = 0,
                             member_chunk: int | None = None, lead_chunk: int = 4, progress: bool = True) -> Path:
    """The operational analogue: a `resolution` Held-Suarez model started from the archived fields.

    Args as `perfect_model_ensemble`, except: init_times are any archived times; resolution ('T<N>')
    and timestep_minutes of the forecast model (default step: the world's at the world's resolution,
    else the world's Courant number: the largest divisor of the archive interval not above
    world step x N_world / N); the model runs on the world's sigma layers. Members start from
    `analysis.analysis_state` (this model's analysis of the archived fields, bias-corrected) plus
    `perturbation_scale` x a draw from this analysis's own errors at the world's saved states in
    `error_span` (`initial_uncertainty`: the truth truncated to `resolution` - the analysis): imperfect
    initial conditions with the uncertainty the archive leaves and, where the world runs finer, an
    imperfect model. With model_error_scale > 0, every archive interval after the first starts with
    that x a draw of the model's own one-interval error (`model_error`, learnt on `error_span`).
    The scales are tuned for spread = error (`scripts/tune_physics_ensembles.py`).
    """
    world = Path(world)
    cfg = world_store.world_config(world)
    if timestep_minutes is None:
        timestep_minutes = cfg.timestep_minutes if resolution == cfg.resolution else _timestep(resolution, cfg)
    model_cfg = dataclasses.replace(cfg, resolution=resolution, timestep_minutes=timestep_minutes)
    provenance = {"kind": "archived_fields", "member_source": f"analysis of the archived fields, {resolution}/L{cfg.layers}"}
    return _from_archive(world, cfg, model_cfg, init_times, members, lead_hours, out, perturbation_scale, error_span,
                         seed, member_chunk, lead_chunk, provenance, progress, model_error_scale)


def predictability_limit_ensemble(world: str | Path, init_times, members: int, lead_hours: int, out: str | Path, *,
                                  perturbation_scale: float = 1.0, error_span: TimeRange = DataConfig().train,
                                  seed: int = 0, member_chunk: int | None = None, lead_chunk: int = 4,
                                  progress: bool = True) -> Path:
    """The predictability limit: the world's own model (`world.truth_model`) from the same analysis and
    perturbations as `archived_fields_ensemble`, at the truth's resolution: no model error, only the
    initial uncertainty the archive leaves. Args as `archived_fields_ensemble`."""
    world = Path(world)
    cfg = world_store.world_config(world)
    provenance = {"kind": "predictability_limit",
                  "member_source": f"analysis of the archived fields, the world's model {cfg.resolution}/L{cfg.layers}"}
    return _from_archive(world, cfg, cfg, init_times, members, lead_hours, out, perturbation_scale, error_span, seed,
                         member_chunk, lead_chunk, provenance, progress)


def _from_archive(world: Path, cfg: WorldConfig, model_cfg: WorldConfig, init_times, members: int, lead_hours: int,
                  out, perturbation_scale: float, error_span: TimeRange, seed: int, member_chunk, lead_chunk: int,
                  provenance: dict, progress: bool, model_error_scale: float = 0.0) -> Path:
    for name, value in (("perturbation_scale", perturbation_scale), ("model_error_scale", model_error_scale)):
        if not value >= 0:
            raise InputError(f"{name}={value}: must be >= 0")
    inits = _times(init_times)
    ds = xr.open_zarr(str(world), chunks=None)
    missing = [t for t in inits if t not in ds.time.values]
    if missing:
        raise InputError(f"{world}: no archived fields at {_fmt(missing)} (archive covers "
                         f"{_fmt(ds.time.values[:1])} .. {_fmt(ds.time.values[-1:])})")
    _check_run(world, cfg, members, lead_hours, member_chunk or 1, lead_chunk)
    truth = world_mod.truth_model(cfg)
    model = world_mod.truth_model(model_cfg)
    errors = initial_uncertainty.analysis_errors(
        world, cfg, error_span, lambda fields: analysis.reconstruct_state(model, fields, cfg),
        None if model is truth else lambda state: world_mod.interpolate_state(state, truth, model))

    def initial(t0):
        return analysis.analysis_state(model, ds.sel(time=t0), cfg, errors)

    def perturb(state, t0, ids):
        draws = initial_uncertainty.perturbations(errors, ensemble.init_key(seed, t0), ids, perturbation_scale)
        return _with_members(initial_uncertainty.add(state, draws), len(ids))

    provenance.update(error_sample=f"{errors.size} saved states in {error_span.start}..{error_span.end}",
                      perturbation_scale=perturbation_scale)
    label = f"analysis error x {perturbation_scale:g}"
    description = (f"{label}: random combinations of {errors.size} longitude-rotated analysis-error cases "
                   f"(truth - analysis at the saved states in {error_span.start}..{error_span.end}), member j from "
                   "fold_in(init_key(seed, init time), j); weatherens.world.initial_uncertainty")
    model_noise = None
    if model_error_scale > 0:
        sample = model_error.model_errors(world, cfg, error_span, model)

        def draws(t0, ids, intervals):
            return model_error.noise(sample, ensemble.init_key(seed, t0), ids, intervals, model_error_scale)

        model_noise = draws

        provenance.update(model_error_scale=model_error_scale)
        label += f", model error x {model_error_scale:g}"
        description += (f"; model error x {model_error_scale:g} added at every archive interval after the first: "
                        f"random combinations of {sample.size} one-interval errors of this model against the world's "
                        "(weatherens.world.model_error)")
    return _run(world, cfg, model, model_cfg, initial, perturb, inits, members, lead_hours, out, label, description,
                seed, member_chunk, lead_chunk, provenance, progress, model_noise)


def _with_members(state: State, members: int) -> State:
    """sim_time broadcast to the members' leading axis, as the vmapped trajectory needs."""
    return dataclasses.replace(state, sim_time=jnp.broadcast_to(state.sim_time, (members,)))


def member_states(model: world_mod.TruthModel, state: State, seed: int, init_time, members, amplitude_k: float) -> State:
    """The perturbed initial states of `members` (M,) ids: a State with a leading axis M.

    Member j adds `amplitude_k` K x N(0, 1) white noise at every nodal point of `model`'s grid
    (layers, lon, lat) to the temperature, drawn from fold_in(init_key(seed, init_time), j) and
    projected onto the model's spherical harmonics, so it depends on (seed, init time, j) alone.
    """
    root = ensemble.init_key(seed, init_time)
    keys = jax.vmap(lambda j: jax.random.fold_in(root, j))(jnp.asarray(members, jnp.uint32))
    return _perturb_fn(model)(state, keys, jnp.float32(amplitude_k))


@functools.lru_cache(maxsize=8)
def _perturb_fn(model: world_mod.TruthModel) -> Callable:
    kelvin = model.physics_specs.nondimensionalize(1.0 * scales.units.degK)

    def one(state, key, amplitude_k):
        noise = (amplitude_k * kelvin) * jax.random.normal(key, model.coords.nodal_shape, jnp.float32)
        return dataclasses.replace(state, temperature_variation=state.temperature_variation
                                   + model.coords.horizontal.to_modal(noise))

    return jax.jit(jax.vmap(one, in_axes=(None, 0, None)))


@functools.lru_cache(maxsize=16)
def _trajectory_fn(model: world_mod.TruthModel, frames: int) -> Callable:
    """Jitted: M states -> (M states `frames` archive intervals on, fields dict (M, frames, ...))."""
    return jax.jit(jax.vmap(time_integration.trajectory_from_step(
        model.step, frames, model.steps_per_archive, post_process_fn=model.archive_fields)))


def channels_of(cfg: WorldConfig) -> tuple[str, ...]:
    """The world's archived channels in store order: 'variable@level' for level variables, else 'variable'."""
    return tuple(ch for v in world_mod.VARIABLE_ATTRS for ch in (
        [names.channel_name(v, p) for p in sorted(cfg.levels)] if v in world_mod.LEVEL_VARIABLES else [v]))


def _stack(fields: dict) -> np.ndarray:
    """fields {variable: (M, n, [P,] lat, lon)} -> (n, M, C, lat, lon) float32 in `channels_of` order."""
    parts = [np.asarray(fields[v]) if v in world_mod.LEVEL_VARIABLES else np.asarray(fields[v])[:, :, None]
             for v in world_mod.VARIABLE_ATTRS]
    return np.concatenate(parts, axis=2).swapaxes(0, 1)


def _check_run(world: Path, cfg: WorldConfig, members: int, lead_hours: int, member_chunk: int, lead_chunk: int) -> None:
    """Arguments every physics ensemble checks before it computes or writes anything."""
    if members < 1 or member_chunk < 1 or lead_chunk < 1:
        raise InputError(f"members ({members}), member_chunk ({member_chunk}), lead_chunk ({lead_chunk}): must be >= 1")
    if lead_hours <= 0 or lead_hours % cfg.archive_hours:
        raise InputError(f"lead_hours={lead_hours}: must be a positive multiple of {world}'s archive interval "
                         f"({cfg.archive_hours} h)")


def _run(world: Path, cfg: WorldConfig, model, model_cfg: WorldConfig, initial: Callable, perturb: Callable,
         inits: np.ndarray, members: int, lead_hours: int, out, label: str, description: str, seed: int,
         member_chunk: int | None, lead_chunk: int, provenance: dict, progress: bool,
         model_noise: Callable | None = None) -> Path:
    """Write the ensemble: per init, initial(t0) -> State; perturb(state, t0, member ids (m,)) -> m States;
    model_noise(t0, member ids (m,), interval indices (F,)) -> States (m, F) added at each interval's start."""
    if member_chunk is None:
        member_chunk = 1 if jax.default_backend() == "cpu" else 16
    steps = lead_hours // cfg.archive_hours
    frames = max(d for d in range(1, min(lead_chunk, steps) + 1) if steps % d == 0)  # one compiled shape
    chunk = min(member_chunk, members)
    source = provenance.pop("member_source")
    writer = output.ForecastWriter(
        out, channels_of(cfg), inits, np.arange(1, steps + 1) * np.timedelta64(cfg.archive_hours, "h"), members,
        grid_mod.equiangular_latitudes(cfg.nlat), grid_mod.longitudes(cfg.nlon),
        member_coords={"member_source": [source] * members, "member_perturbation": [label] * members},
        attrs={**provenance, "source": "weatherens physics ensemble", "world": str(world),
               "world_config": json.dumps(config_mod.to_dict(cfg), sort_keys=True), "resolution": model_cfg.resolution,
               "layers": model_cfg.layers, "timestep_minutes": model_cfg.timestep_minutes, "seed": seed,
               "perturbation": description,
               "forcing": "Held-Suarez (1994)", "references": REFERENCES},
        variable_attrs=world_mod.VARIABLE_ATTRS)
    todo = [i for i in range(len(inits)) if i not in set(writer.completed().tolist())]
    advance = _trajectory_fn(model, frames) if model_noise is None else model_error.trajectory_fn(model, frames)
    total = len(todo) * math.ceil(members / chunk) * steps  # init x member chunk x lead
    with tqdm(total=total, desc=provenance["kind"], unit="lead", disable=not progress) as bar:
        for i in todo:
            state0 = initial(inits[i])
            for m0 in range(0, members, chunk):
                # the last chunk is padded past `members` (one compiled shape), then cut
                ids = np.arange(m0, m0 + chunk)
                state = perturb(state0, inits[i], ids)
                keep = slice(m0, min(m0 + chunk, members))
                for lead in range(0, steps, frames):
                    if model_noise is None:
                        state, fields = advance(state)
                    else:
                        state, fields = advance(state, model_noise(inits[i], ids, np.arange(lead, lead + frames)))
                    block = _stack(jax.device_get(fields))[:, : keep.stop - keep.start]
                    writer.write(i, slice(lead, lead + frames), keep, block)
                    bar.update(frames)
            writer.mark_complete(i)
    path = writer.finish()
    if path is None:
        raise WeatherensError(f"{writer.partial}: some initialisation times are not complete")
    return path


def _timestep(resolution: str, cfg: WorldConfig) -> float:
    """Minutes: the world's Courant number at `resolution` (dt x N constant), cut to a divisor of the archive interval."""
    def truncation(res):  # N of 'T<N>'
        return world_mod.truth_grid(res).longitude_wavenumbers - 1

    limit = cfg.timestep_minutes * truncation(cfg.resolution) / truncation(resolution)
    interval = cfg.archive_hours * 60
    return float(max(d for d in range(1, interval + 1) if interval % d == 0 and d <= limit))


def _times(init_times) -> np.ndarray:
    return np.atleast_1d(np.asarray(init_times, "datetime64[ns]"))


def _fmt(times) -> str:
    return ", ".join(str(np.datetime64(t, "h")) for t in times)
