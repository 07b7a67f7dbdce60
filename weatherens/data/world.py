"""The physics world: a Held-Suarez dinosaur run archived in the ERA5 / WeatherBench 2 schema.

The truth is dinosaur's sigma-coordinate primitive equations (Google's JAX dynamical core behind
NeuralGCM) with the forcing of Held & Suarez (1994, BAMS 75(10), 1825-1830): Newtonian relaxation
to a zonal radiative-equilibrium temperature and Rayleigh friction near the surface. It is a dry
dynamical core: no moisture, no orography, no seasons or diurnal cycle. The truth runs at a higher
resolution (e.g. T42) than the archive (64 x 32, a few pressure levels), so a forecaster that sees
only the archive faces real uncertainty.

Store layout (zarr v3, consolidated): the root holds the archive, dims `time, level, latitude,
longitude`; the subgroup `physics_state` holds full spectral model states every
`cfg.state_every_days`, so that physics ensembles can start from the exact truth
(`load_truth_states`, `truth_model(cfg).advance`, `truth_model(cfg).archive`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import math
import re
import shutil
import warnings
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
import zarr
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
from tqdm.auto import tqdm

import weatherens
from weatherens import config as config_mod
from weatherens import grid as grid_mod
from weatherens.config import WorldConfig

STATE_GROUP = "physics_state"
COMPLETE_ATTR = "weatherens_world_complete"
CONFIG_ATTR = "weatherens_world_config"
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
    "geopotential": {"units": "m**2 s**-2", "long_name": "Geopotential", "standard_name": "geopotential"},
    "temperature": {"units": "K", "long_name": "Temperature", "standard_name": "air_temperature"},
    "u_component_of_wind": {"units": "m s**-1", "long_name": "U component of wind", "standard_name": "eastward_wind"},
    "v_component_of_wind": {"units": "m s**-1", "long_name": "V component of wind", "standard_name": "northward_wind"},
    "surface_pressure": {"units": "Pa", "long_name": "Surface pressure", "standard_name": "surface_air_pressure"},
    "2m_temperature": {
        "units": "K",
        "long_name": "2 metre temperature",
        "comment": "temperature of the lowest sigma layer of the truth run, standing in for the 2 m temperature",
    },
}
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
        raise ValueError(f"world.resolution: expected 'T<N>' (e.g. 'T21', 'T42'), got {resolution!r}")
    named = getattr(spherical_harmonic.Grid, resolution.strip(), None)
    if named is not None:
        return named()
    if m.group(1):
        raise ValueError(f"world.resolution: dinosaur has no linear grid {resolution!r}")
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
    if not cfg.levels or not all(0 < p < 1000 for p in cfg.levels):
        problems.append(f"levels must lie strictly between 0 and 1000 hPa, got {cfg.levels}")
    if problems:
        raise ValueError("world config: " + "; ".join(problems))


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


def _archive_fn(coords, specs, ref_temps, levels, nlon, nlat) -> Callable:
    """State -> archived fields: sigma -> pressure (linear in log p), then conservative regridding."""
    units = scales.units
    horizontal = coords.horizontal
    log_sigma = np.log(coords.vertical.centers)
    log_p = np.log([specs.nondimensionalize(p * units.hPa) for p in levels])[:, None, None]
    interp = vertical_interpolation.vectorize_vertical_interpolation(
        vertical_interpolation.linear_interp_with_linear_extrap)
    w_lon = np.asarray(horizontal_interpolation.conservative_longitude_weights(
        horizontal.longitudes, np.deg2rad(grid_mod.longitudes(nlon))))
    w_lat = np.asarray(horizontal_interpolation.conservative_latitude_weights(
        horizontal.latitudes, np.deg2rad(grid_mod.equiangular_latitudes(nlat))))
    scale = {  # nondimensional -> SI
        "geopotential": specs.dimensionalize(1.0, units.m**2 / units.s**2).m,
        "temperature": specs.dimensionalize(1.0, units.degK).m,
        "wind": specs.dimensionalize(1.0, units.m / units.s).m,
        "pressure": specs.dimensionalize(1.0, units.pascal).m,
    }

    def regrid(x):  # (..., lon, lat) on the truth grid -> (..., lat, lon) on the archive grid
        return jnp.einsum("ab,cd,...bd->...ca", w_lon, w_lat, x, precision=jax.lax.Precision.HIGHEST)

    def archive_fields(state: primitive_equations.State) -> dict[str, jax.Array]:
        temperature = horizontal.to_nodal(state.temperature_variation) + ref_temps[:, None, None]
        log_ps = horizontal.to_nodal(state.log_surface_pressure)  # (1, lon, lat)
        u, v = spherical_harmonic.vor_div_to_uv_nodal(horizontal, state.vorticity, state.divergence)
        phi = primitive_equations.get_geopotential_on_sigma(
            temperature, nodal_orography=jnp.zeros(horizontal.nodal_shape), sigma=coords.vertical,
            gravity_acceleration=specs.g, ideal_gas_constant=specs.R)
        target = log_p - log_ps  # log(p / ps) of each pressure level, (level, lon, lat)
        on_p = {k: interp(target, log_sigma, x) for k, x in
                (("geopotential", phi), ("temperature", temperature), ("u_component_of_wind", u),
                 ("v_component_of_wind", v))}
        out = {k: regrid(x) * scale["wind" if k.endswith("wind") else k] for k, x in on_p.items()}
        out["surface_pressure"] = regrid(jnp.exp(log_ps[0])) * scale["pressure"]
        out["2m_temperature"] = regrid(temperature[-1]) * scale["temperature"]
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


@functools.lru_cache(maxsize=8)
def _chunk_fn(model: TruthModel, frames: int) -> Callable:
    """Jitted: state at t -> (state at t + frames intervals, archived fields at t ... t + (frames-1) intervals)."""
    return jax.jit(time_integration.trajectory_from_step(
        model.step, frames, model.steps_per_archive, start_with_input=True, post_process_fn=model.archive_fields))


def _config_json(cfg: WorldConfig) -> str:
    return json.dumps(config_mod.to_dict(cfg), sort_keys=True)


def world_config(path: str | Path) -> WorldConfig:
    """The WorldConfig a world store was built with (from its attributes)."""
    attrs = zarr.open_group(str(path), mode="r").attrs
    if CONFIG_ATTR not in attrs:
        raise ValueError(f"{path}: not a weatherens physics world (no {CONFIG_ATTR!r} attribute)")
    fields = json.loads(attrs[CONFIG_ATTR])
    return WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def _check_existing(out: Path, cfg: WorldConfig) -> None:
    try:
        attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    except Exception as err:  # noqa: BLE001 - any unreadable store is reported the same way
        raise ValueError(f"{out}: exists but is not a readable zarr store ({err}); remove it or choose another path") from err
    if not attrs.get(COMPLETE_ATTR):
        raise ValueError(f"{out}: exists but is not a complete physics world; remove it to rebuild")
    theirs, ours = json.loads(attrs.get(CONFIG_ATTR, "{}")), json.loads(_config_json(cfg))
    diff = {k: (theirs.get(k), ours[k]) for k in ours if theirs.get(k) != ours[k]}
    if diff:
        details = ", ".join(f"{k}: store has {a!r}, asked for {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"{out}: a physics world built with a different config ({details}); "
                         "remove it or choose another path")


def _frames_dataset(fields: dict[str, np.ndarray], times: np.ndarray, cfg: WorldConfig) -> xr.Dataset:
    dims3, dims2 = ("time", "level", "latitude", "longitude"), ("time", "latitude", "longitude")
    data = {k: (dims3 if k in LEVEL_VARIABLES else dims2, v, VARIABLE_ATTRS[k]) for k, v in fields.items()}
    coords = {
        "time": ("time", times, {"standard_name": "time", "long_name": "time"}),
        "level": ("level", np.array(sorted(cfg.levels), np.int64),
                  {"units": "hPa", "long_name": "pressure_level", "standard_name": "air_pressure", "positive": "down"}),
        "latitude": ("latitude", grid_mod.equiangular_latitudes(cfg.nlat),
                     {"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude"}),
        "longitude": ("longitude", grid_mod.longitudes(cfg.nlon),
                      {"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude"}),
    }
    return xr.Dataset(data, coords)


def _states_dataset(model: TruthModel, state: primitive_equations.State, time: np.datetime64, sim_time: float) -> xr.Dataset:
    m, l = model.coords.horizontal.modal_axes
    spectral = ("longitudinal_wavenumber", "total_wavenumber")
    data = {k: (("state_time", "sigma", *spectral), np.asarray(getattr(state, k))[None])
            for k in ("vorticity", "divergence", "temperature_variation")}
    data["log_surface_pressure"] = (("state_time", "surface", *spectral), np.asarray(state.log_surface_pressure)[None])
    data["sim_time"] = (("state_time",), np.array([sim_time]),
                        {"long_name": "nondimensional model time since the start of the spin-up"})
    coords = {"state_time": ("state_time", np.array([time], "datetime64[ns]")), "sigma": model.coords.vertical.centers,
              "longitudinal_wavenumber": np.asarray(m), "total_wavenumber": np.asarray(l)}
    return xr.Dataset(data, coords, attrs={
        "description": "dinosaur primitive_equations.State in modal (spectral) form, nondimensional units "
                       "(PrimitiveEquationsSpecs.from_si); rebuild the model with weatherens.data.world.truth_model",
        "reference_temperature_K": 288.0,
    })


def _append(ds: xr.Dataset, path: Path, dim: str, group: str | None, first: bool, start: str) -> None:
    if first:
        enc = {k: {"chunks": (1, *v.shape[1:]), "dtype": "float32"} for k, v in ds.data_vars.items() if v.dtype == np.float32}
        enc[dim] = {"units": f"hours since {np.datetime64(start, 's')}", "calendar": "proleptic_gregorian", "dtype": "int64"}
        ds.to_zarr(path, group=group, mode="a", encoding=enc, consolidated=False, zarr_format=3)
    else:
        ds.to_zarr(path, group=group, append_dim=dim, consolidated=False, zarr_format=3)


def build_world(out: str | Path, cfg: WorldConfig, *, progress: bool = True) -> Path:
    """Run the truth and archive it at `out` (zarr v3), or return `out` if it already holds this world.

    Spin-up of `cfg.spinup_days` (rounded to whole archive intervals) is discarded; then
    `cfg.years * 365` days are archived every `cfg.archive_hours` from `cfg.start`, and the full
    model state every `cfg.state_every_days` into the `physics_state` group. Written to
    `out + '.partial'` and renamed when complete; a stale partial is removed. Raises ValueError if
    `out` holds a world built with another config.
    """
    out = Path(out)
    if out.exists():
        _check_existing(out, cfg)
        return out
    model = truth_model(cfg)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)

    interval_days = cfg.archive_hours / 24
    n_spin = round(cfg.spinup_days / interval_days)
    n_frames = round(cfg.years * 365 / interval_days)
    per_state = round(cfg.state_every_days / interval_days)
    start = np.datetime64(cfg.start, "ns")
    step_td = np.timedelta64(cfg.archive_hours, "h")

    state = initial_state(model, cfg.seed)
    with tqdm(total=n_spin * interval_days, unit="day", desc="spin-up", disable=not progress) as bar:
        for i in range(1, n_spin + 1):
            state = model.advance(state)
            if i % 4 == 0 or i == n_spin:  # wait now and then, so the bar shows computed (not queued) days
                jax.block_until_ready(state)
                bar.update(bar.total * i / n_spin - bar.n)

    with tqdm(total=n_frames * interval_days, unit="day", desc="archive", disable=not progress) as bar:
        for first in range(0, n_frames, per_state):
            frames = min(per_state, n_frames - first)
            sim_time = model.model_time((n_spin + first) * interval_days)
            state = dataclasses.replace(state, sim_time=jnp.float32(sim_time))
            _append(_states_dataset(model, state, start + first * step_td, sim_time),
                    partial, "state_time", STATE_GROUP, first == 0, cfg.start)
            state, fields = _chunk_fn(model, frames)(state)
            times = start + (first + np.arange(frames)) * step_td
            _append(_frames_dataset(jax.device_get(fields), times, cfg), partial, "time", None, first == 0, cfg.start)
            bar.update(frames * interval_days)

    root = zarr.open_group(str(partial), mode="a")
    root.attrs.update({
        "title": "weatherens physics world",
        "description": DESCRIPTION,
        "references": REFERENCES,
        "Conventions": "CF-1.8",
        "source": (f"dinosaur {importlib.metadata.version('dinosaur')} primitive equations (sigma coordinates), "
                   f"{cfg.resolution} ({model.coords.horizontal.longitude_nodes}x{model.coords.horizontal.latitude_nodes} "
                   f"Gaussian grid), {cfg.layers} equidistant sigma layers, imex_rk_sil3, dt {cfg.timestep_minutes} min; "
                   "archived by conservative regridding of fields interpolated linearly in log pressure"),
        "weatherens_version": weatherens.__version__,
        "dinosaur_version": importlib.metadata.version("dinosaur"),
        CONFIG_ATTR: _config_json(cfg),
        "spinup_days_run": n_spin * interval_days,
    })
    root.attrs[COMPLETE_ATTR] = True
    with warnings.catch_warnings():  # "consolidated metadata is not part of the zarr v3 spec" (xarray reads it)
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(partial))
    partial.rename(out)
    return out


def load_truth_states(path: str | Path) -> tuple[np.ndarray, primitive_equations.State]:
    """The saved truth states of a world: times (S,) datetime64[ns] and one State with leading axis S.

    Fields are float32 jax arrays in dinosaur's modal form (see TruthModel); sim_time is (S,).
    Index one with `jax.tree.map(lambda x: x[i], states)` and advance it with `truth_model(cfg).advance`.
    """
    try:
        ds = xr.open_zarr(str(path), group=STATE_GROUP, chunks=None)
    except (FileNotFoundError, KeyError) as err:
        raise ValueError(f"{path}: no {STATE_GROUP!r} group (not a physics world?)") from err
    state = primitive_equations.State(
        **{k: jnp.asarray(ds[k].values) for k in ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")},
        sim_time=jnp.asarray(ds["sim_time"].values, jnp.float32),
    )
    return ds["state_time"].values, state


def _store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def describe(path: str | Path) -> str:
    """A human summary of a world: times, grid, variables, a few physical numbers, size, settings."""
    path = Path(path)
    ds = xr.open_zarr(str(path))
    w = xr.DataArray(grid_mod.latitude_weights(ds.latitude.values), dims="latitude")
    sample = ds.isel(time=np.unique(np.linspace(0, ds.sizes["time"] - 1, min(ds.sizes["time"], 40)).astype(int))).load()
    t = ds.time.values
    step_h = f"{(t[1] - t[0]) / np.timedelta64(1, 'h'):g}" if t.size > 1 else "?"
    lines = [
        f"physics world {path} ({_store_bytes(path) / 2**20:.1f} MiB on disk)",
        f"  {ds.attrs.get('description', '')}",
        f"  time: {str(t[0])[:16]} .. {str(t[-1])[:16]}, {t.size} times every {step_h} h",
        f"  grid: {ds.sizes['longitude']} x {ds.sizes['latitude']} (lon x lat), levels {[int(p) for p in ds.level.values]} hPa",
        "  variables:",
    ]
    for name, var in ds.data_vars.items():
        lines.append(f"    {name:22s} [{var.attrs.get('units', '?')}] {'on levels' if 'level' in var.dims else 'single level'}")
    numbers = []
    if "temperature" in ds and 850 in ds.level:
        t850 = sample.temperature.sel(level=850).weighted(w).mean(("latitude", "longitude")).mean().item()
        numbers.append(f"global-mean T850 {t850:.1f} K")
    if "geopotential" in ds and 500 in ds.level:
        z500 = sample.geopotential.sel(level=500)
        numbers.append(f"z500 {z500.min().item():.0f} .. {z500.max().item():.0f} m**2 s**-2")
    if "u_component_of_wind" in ds and 250 in ds.level:
        u250 = sample.u_component_of_wind.sel(level=250).mean(("longitude", "time")).max().item()
        numbers.append(f"max zonal-mean u250 {u250:.1f} m s**-1")
    if "surface_pressure" in ds:
        numbers.append(f"global-mean surface pressure {sample.surface_pressure.weighted(w).mean().item():.0f} Pa")
    lines.append(f"  sampled ({sample.sizes['time']} times): " + "; ".join(numbers))
    lines.append(f"  truth: {ds.attrs.get('source', '?')}")
    lines.append(f"  config: {ds.attrs.get(CONFIG_ATTR, '?')}")
    lines.append(f"  versions: weatherens {ds.attrs.get('weatherens_version', '?')}, dinosaur {ds.attrs.get('dinosaur_version', '?')}")
    return "\n".join(lines)
