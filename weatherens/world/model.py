"""The physics world's model: a Held-Suarez dinosaur run, archived in the ERA5 / WeatherBench 2 schema.

The truth is dinosaur's sigma-coordinate primitive equations (Google's JAX dynamical core behind
NeuralGCM) with the forcing of Held & Suarez (1994, BAMS 75(10), 1825-1830): Newtonian relaxation
to a zonal radiative-equilibrium temperature and Rayleigh friction near the surface. It is a dry
dynamical core: no moisture, no orography, no seasons or diurnal cycle. The truth runs at a higher
resolution (e.g. T42) than the archive (64 x 32, a few pressure levels), so a forecaster that sees
only the archive faces real uncertainty.

This module is the model: `truth_model(cfg)` (time step, archive interval, archived fields),
`initial_state`, `chunk_fn` (a run of archived frames) and `load_truth_states`, which reads back
the saved full states so that physics ensembles can start from the exact truth
(`truth_model(cfg).advance`, `truth_model(cfg).archive`). Building, resuming and describing the
zarr store is `weatherens.world.store` (`build_world`, `describe`, `world_config`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from dinosaur import (
    coordinate_systems,
    held_suarez,
    horizontal_interpolation,
    primitive_equations,
    primitive_equations_states,
    scales,
    sigma_coordinates,
    spherical_harmonic,
    time_integration,
    vertical_interpolation,
)

from weatherens import grid as grid_mod
from weatherens.config import WorldConfig
from weatherens.data import names
from weatherens.errors import InputError

STATE_GROUP = "physics_state"
STATE_FIELDS = ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")  # saved per state
DESCRIPTION = "Held–Suarez dry dynamical core: no moisture, no orography, no seasons or diurnal cycle"
REFERENCES = (
    "Held, I. M. and M. J. Suarez, 1994: A proposal for the intercomparison of the dynamical cores of "
    "atmospheric general circulation models. BAMS 75(10), 1825-1830. "
    "dinosaur (github.com/neuralgcm/dinosaur): spectral primitive equations in JAX."
)
_P0 = 1e5 * scales.units.pascal  # reference surface pressure of the rest state and of the forcing
_P1 = 5e3 * scales.units.pascal  # amplitude of dinosaur's localized surface-pressure bump
_NOISE_K = 0.1  # std of the seeded white-noise temperature perturbation, K
# dinosaur's Held-Suarez notebook filter (nondimensional tau); damping per unit time is dt-independent.
_FILTER = dict(tau=0.0087504, order=1.5, cutoff=0.8)

VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    v: names.attrs(v) for v in ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind",
                                "surface_pressure", "2m_temperature")}
VARIABLE_ATTRS["2m_temperature"]["comment"] = (
    "temperature of the lowest sigma layer of the truth run, standing in for the 2 m temperature")
LEVEL_VARIABLES = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")


@dataclasses.dataclass(frozen=True, eq=False)
class TruthModel:
    """The truth run's dinosaur model, rebuilt from a WorldConfig (see `truth_model`).

    States are dinosaur `primitive_equations.State`s in modal (spectral) form and nondimensional
    units: vorticity, divergence, temperature_variation (layers, *modal), log_surface_pressure
    (1, *modal), sim_time (scalar). `step` and `archive_fields` are pure and unjitted (vmap them
    for ensembles); `advance` (one archive interval) and `archive` are jitted.
    """

    coords: coordinate_systems.CoordinateSystem
    physics_specs: primitive_equations.PrimitiveEquationsSpecs
    reference_temperature: np.ndarray  # (layers,), nondimensional
    dt: float  # nondimensional time step
    steps_per_archive: int  # time steps per archive interval
    step: Callable  # State -> State, one time step
    advance: Callable  # State -> State, one archive interval (jitted)
    archive_fields: Callable  # State -> dict of float32 fields (level, lat, lon) or (lat, lon), physical units

    @functools.cached_property
    def _archive_jit(self) -> Callable:
        return jax.jit(self.archive_fields)

    def archive(self, state: primitive_equations.State) -> dict[str, np.ndarray]:
        """The archived fields of one state: numpy float32, (level, lat, lon) or (lat, lon), SI units."""
        return {k: np.asarray(v) for k, v in jax.device_get(self._archive_jit(state)).items()}

    def model_time(self, days: float) -> float:
        """Nondimensional model time of a duration in days."""
        return float(self.physics_specs.nondimensionalize(days * scales.units.day))


def truth_grid(resolution: str) -> spherical_harmonic.Grid:
    """dinosaur's Gaussian grid for a triangular truncation 'T<N>' ('T21' 64x32, 'T42' 128x64, ...).

    Named grids come from dinosaur (`Grid.T42()`); other N use the quadratic (alias-free) rule
    of those grids, (3N + 1) / 4 Gaussian latitudes per hemisphere, rounded up.
    """
    m = re.fullmatch(r"T(L?)(\d+)", resolution.strip())
    if not m:
        raise InputError(f"world.resolution: expected 'T<N>' (e.g. 'T21', 'T42'), got {resolution!r}")
    named = getattr(spherical_harmonic.Grid, resolution.strip(), None)
    if named is not None:
        return named()
    if m.group(1):
        raise InputError(f"world.resolution: dinosaur has no linear grid {resolution!r}")
    n = int(m.group(2))
    return spherical_harmonic.Grid.construct(max_wavenumber=n, gaussian_nodes=math.ceil((3 * n + 1) / 4))


def _check(cfg: WorldConfig) -> None:
    problems = []
    if cfg.layers < 2:
        problems.append(f"layers must be >= 2, got {cfg.layers}")
    if (cfg.archive_hours * 60) % cfg.timestep_minutes:
        problems.append(f"timestep_minutes={cfg.timestep_minutes} must divide archive_hours={cfg.archive_hours} h")
    if (cfg.state_every_days * 24) % cfg.archive_hours:
        problems.append(f"state_every_days={cfg.state_every_days} must be a multiple of archive_hours={cfg.archive_hours} h")
    if round(cfg.years * 365 * 24 / cfg.archive_hours) < 1 or cfg.spinup_days < 0 or cfg.state_every_days <= 0:
        problems.append(f"need at least one archived time, spinup_days >= 0 and state_every_days > 0, got "
                        f"years={cfg.years}, spinup_days={cfg.spinup_days}, state_every_days={cfg.state_every_days}")
    if cfg.spinup_resolution.strip():
        try:
            truth_grid(cfg.spinup_resolution)
        except ValueError:
            problems.append(f"spinup_resolution must be a truncation 'T<N>' (or '' for none), got {cfg.spinup_resolution!r}")
    if cfg.spinup_final_days < 0:
        problems.append(f"spinup_final_days must be >= 0, got {cfg.spinup_final_days}")
    if not cfg.levels or not all(0 < p < 1000 for p in cfg.levels):
        problems.append(f"levels must lie strictly between 0 and 1000 hPa, got {cfg.levels}")
    if problems:
        raise InputError("world config: " + "; ".join(problems))


def truth_model(cfg: WorldConfig) -> TruthModel:
    """The dinosaur model of the truth run (cached on the settings that shape it; not on seed or length)."""
    _check(cfg)
    return _truth_model(cfg.resolution, cfg.layers, cfg.timestep_minutes, cfg.archive_hours,
                        tuple(sorted(cfg.levels)), cfg.nlon, cfg.nlat)


@functools.lru_cache(maxsize=8)
def _truth_model(resolution, layers, timestep_minutes, archive_hours, levels, nlon, nlat) -> TruthModel:
    units = scales.units
    horizontal = truth_grid(resolution)
    coords = coordinate_systems.CoordinateSystem(horizontal, sigma_coordinates.SigmaCoordinates.equidistant(layers))
    specs = primitive_equations.PrimitiveEquationsSpecs.from_si()
    ref_temps = np.full((layers,), specs.nondimensionalize(288.0 * units.degK))
    orography = np.zeros(coords.horizontal.modal_shape)
    dt = float(specs.nondimensionalize(timestep_minutes * units.minute))
    equation = time_integration.compose_equations([
        primitive_equations.PrimitiveEquations(ref_temps, orography, coords, specs),
        held_suarez.HeldSuarezForcing(coords=coords, physics_specs=specs, reference_temperature=ref_temps, p0=_P0),
    ])
    step = time_integration.step_with_filters(
        time_integration.imex_rk_sil3(equation, dt),
        [time_integration.exponential_step_filter(horizontal, dt, **_FILTER)],
    )
    steps_per_archive = round(archive_hours * 60 / timestep_minutes)
    archive_fields = _archive_fn(coords, specs, ref_temps, levels, nlon, nlat)
    return TruthModel(coords, specs, ref_temps, dt, steps_per_archive, step,
                      jax.jit(time_integration.repeated(step, steps_per_archive)), archive_fields)


def nodal_fields_fn(coords, specs, ref_temps, levels,
                    horizontal: spherical_harmonic.Grid) -> tuple[Callable, dict[str, float]]:
    """(fields, si): State -> nondimensional fields on `horizontal`'s nodes in dinosaur's (..., lon, lat)
    order, and the factor to SI units of each key.

    The modal state is synthesised on `horizontal` (any dinosaur grid with the truth's wavenumbers:
    exact spectral interpolation), then sigma -> pressure linearly in log p (linear extrapolation
    below the lowest and above the highest layer). Keys: the `LEVEL_VARIABLES` (level, lon, lat),
    'surface_pressure' and 'lowest_layer_temperature' / '_u' / '_v' (lon, lat). The winds are
    u, v = (u cos(lat), v cos(lat)) / cos(lat), so they are not finite on a grid with poles.
    """
    units = scales.units
    log_sigma = np.log(coords.vertical.centers)
    log_p = np.log([specs.nondimensionalize(p * units.hPa) for p in levels])[:, None, None]
    interp = vertical_interpolation.vectorize_vertical_interpolation(
        vertical_interpolation.linear_interp_with_linear_extrap)
    scale = {  # nondimensional -> SI
        "geopotential": specs.dimensionalize(1.0, units.m**2 / units.s**2).m,
        "temperature": specs.dimensionalize(1.0, units.degK).m,
        "wind": specs.dimensionalize(1.0, units.m / units.s).m,
        "pressure": specs.dimensionalize(1.0, units.pascal).m,
    }

    def fields(state: primitive_equations.State) -> dict[str, jax.Array]:
        temperature = horizontal.to_nodal(state.temperature_variation) + ref_temps[:, None, None]
        log_ps = horizontal.to_nodal(state.log_surface_pressure)  # (1, lon, lat)
        u, v = spherical_harmonic.vor_div_to_uv_nodal(horizontal, state.vorticity, state.divergence)
        phi = primitive_equations.get_geopotential_on_sigma(
            temperature, nodal_orography=jnp.zeros(horizontal.nodal_shape), sigma=coords.vertical,
            gravity_acceleration=specs.g, ideal_gas_constant=specs.R)
        target = log_p - log_ps  # log(p / ps) of each pressure level, (level, lon, lat)
        out = {k: interp(target, log_sigma, x) for k, x in
               (("geopotential", phi), ("temperature", temperature), ("u_component_of_wind", u),
                ("v_component_of_wind", v))}
        out["surface_pressure"] = jnp.exp(log_ps[0])
        out["lowest_layer_temperature"] = temperature[-1]
        out["lowest_layer_u"], out["lowest_layer_v"] = u[-1], v[-1]
        return out

    si = {"geopotential": scale["geopotential"], "temperature": scale["temperature"],
          "u_component_of_wind": scale["wind"], "v_component_of_wind": scale["wind"],
          "surface_pressure": scale["pressure"], "lowest_layer_temperature": scale["temperature"],
          "lowest_layer_u": scale["wind"], "lowest_layer_v": scale["wind"]}
    return fields, si


def _archive_fn(coords, specs, ref_temps, levels, nlon, nlat) -> Callable:
    """State -> archived fields: `nodal_fields_fn` on the truth grid, then conservative regridding."""
    horizontal = coords.horizontal
    on_truth_grid, si = nodal_fields_fn(coords, specs, ref_temps, levels, horizontal)
    w_lon = np.asarray(horizontal_interpolation.conservative_longitude_weights(
        horizontal.longitudes, np.deg2rad(grid_mod.longitudes(nlon))))
    w_lat = np.asarray(horizontal_interpolation.conservative_latitude_weights(
        horizontal.latitudes, np.deg2rad(grid_mod.equiangular_latitudes(nlat))))

    def regrid(x):  # (..., lon, lat) on the truth grid -> (..., lat, lon) on the archive grid
        return jnp.einsum("ab,cd,...bd->...ca", w_lon, w_lat, x, precision=jax.lax.Precision.HIGHEST)

    def archive_fields(state: primitive_equations.State) -> dict[str, jax.Array]:
        nodal = on_truth_grid(state)
        out = {k: regrid(nodal[k]) * si[k] for k in (*LEVEL_VARIABLES, "surface_pressure")}
        out["2m_temperature"] = regrid(nodal["lowest_layer_temperature"]) * si["temperature"]
        return {k: x.astype(jnp.float32) for k, x in out.items()}

    return archive_fields


def initial_state(model: TruthModel, seed: int) -> primitive_equations.State:
    """dinosaur's resting isothermal (288 K) Held-Suarez start, perturbed from `seed`.

    The seed places dinosaur's 50 hPa surface-pressure bump and draws 0.1 K white noise in temperature.
    """
    key_bump, key_noise = jax.random.split(jax.random.key(seed))
    init_fn, _ = primitive_equations_states.isothermal_rest_atmosphere(
        model.coords, model.physics_specs, tref=288.0 * scales.units.degK, p0=_P0, p1=_P1)
    state = init_fn(key_bump)
    noise_k = model.physics_specs.nondimensionalize(_NOISE_K * scales.units.degK)
    noise = noise_k * jax.random.normal(key_noise, model.coords.nodal_shape, jnp.float32)
    return dataclasses.replace(
        state,
        temperature_variation=state.temperature_variation + model.coords.horizontal.to_modal(noise),
        sim_time=jnp.float32(0.0),
    )


def _coarse_spinup_resolution(cfg: WorldConfig) -> str | None:
    """`cfg.spinup_resolution` when it is coarser than the truth's, else None (no coarse part)."""
    coarse = cfg.spinup_resolution.strip()
    if not coarse or truth_grid(coarse).total_wavenumbers >= truth_grid(cfg.resolution).total_wavenumbers:
        return None
    return coarse


def spinup_model(cfg: WorldConfig) -> TruthModel | None:
    """The model of the spin-up's coarse part (`cfg.spinup_resolution`, the truth's layers and time
    step), or None when the spin-up runs at the truth's resolution only ('' or a truncation that is
    not coarser than the truth's)."""
    coarse = _coarse_spinup_resolution(cfg)
    return None if coarse is None else truth_model(dataclasses.replace(cfg, resolution=coarse, spinup_resolution=""))


def spinup_fine_intervals(cfg: WorldConfig, n_spin: int) -> int:
    """Archive intervals of the spin-up run at the truth's resolution (the last ones): all of them
    without a coarse part, else `cfg.spinup_final_days` rounded to whole intervals (at most n_spin)."""
    if _coarse_spinup_resolution(cfg) is None:
        return n_spin
    return min(n_spin, round(cfg.spinup_final_days * 24 / cfg.archive_hours))


def interpolate_state(state: primitive_equations.State, source: TruthModel, target: TruthModel) -> primitive_equations.State:
    """A state of `source`'s truncation as a state of `target`'s: the same spherical-harmonic
    coefficients, zero above the coarser truncation (exact spectral interpolation; truncation when
    `target` is coarser). Both models must have the same sigma layers.

    dinosaur's real basis is orthonormal on the sphere for any grid, and its modal axes are
    m = [0, 1, -1, 2, -2, ...] and l = [0, 1, 2, ...], so a coefficient keeps its index.
    """
    (m_src, l_src), (m_dst, l_dst) = source.coords.horizontal.modal_axes, target.coords.horizontal.modal_axes
    k, n = min(m_src.size, m_dst.size), min(l_src.size, l_dst.size)
    if not (np.array_equal(m_src[:k], m_dst[:k]) and np.array_equal(l_src[:n], l_dst[:n])):
        raise InputError("interpolate_state: the two grids' modal layouts differ")
    if source.coords.vertical != target.coords.vertical:
        raise InputError("interpolate_state: the two models' sigma layers differ")
    shape = target.coords.horizontal.modal_shape

    def resize(x):
        out = jnp.zeros((*x.shape[:-2], *shape), x.dtype)
        return out.at[..., :k, :n].set(x[..., :k, :n])

    return dataclasses.replace(state, **{k: resize(getattr(state, k)) for k in STATE_FIELDS},
                               tracers={k: resize(v) for k, v in state.tracers.items()})


@functools.lru_cache(maxsize=8)
def chunk_fn(model: TruthModel, frames: int) -> Callable:
    """Jitted: state at t -> (state at t + frames intervals, archived fields at t ... t + (frames-1) intervals)."""
    return jax.jit(time_integration.trajectory_from_step(
        model.step, frames, model.steps_per_archive, start_with_input=True, post_process_fn=model.archive_fields))


def load_truth_states(path: str | Path) -> tuple[np.ndarray, primitive_equations.State]:
    """The saved truth states of a world: times (S,) datetime64[ns] and one State with leading axis S.

    Fields are float32 jax arrays in dinosaur's modal form (see TruthModel); sim_time is (S,).
    Index one with `jax.tree.map(lambda x: x[i], states)` and advance it with `truth_model(cfg).advance`.
    """
    try:
        ds = xr.open_zarr(str(path), group=STATE_GROUP, chunks=None)
    except (FileNotFoundError, KeyError) as err:
        raise InputError(f"{path}: no {STATE_GROUP!r} group (not a physics world?)") from err
    state = primitive_equations.State(
        **{k: jnp.asarray(ds[k].values) for k in STATE_FIELDS},
        sim_time=jnp.asarray(ds["sim_time"].values, jnp.float32),
    )
    return ds["state_time"].values, state

