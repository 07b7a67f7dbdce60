"""The physics world's store: build, resume and describe the zarr archive of the truth run.

Layout (zarr v3, consolidated): the root holds the archive, dims `time, level, latitude,
longitude`; the subgroup `physics_state` holds the full spectral model state at the start of every
chunk of `cfg.state_every_days`, so that physics ensembles can start from the exact truth (the
model, and `load_truth_states`, are `weatherens.world.model`).

Never half-written, always resumable. The build writes `<out>.partial`, whose root carries the
config from its first write, and renames it to `<out>` once complete, so `<out>` is always whole.
After the spin-up (not saved: a kill during it starts over) the archive is written chunk by chunk,
each in two appends: the state at the chunk start to `physics_state`, then the chunk's frames to
the root. A build that finds a partial of its own config resumes it (`_resume`): it finds the last
chunk whose start state and all earlier frames are whole, cuts every array back to that chunk's
start, reloads the saved float32 state (the very state the uninterrupted run held) and goes on
with the same jitted chunk function, so the store comes out bitwise as an uninterrupted build's
(on the same machine and versions). A partial of another config, an unreadable one, or one
without a whole state is deleted and the build starts over; either way a warning says so.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
import zarr
from dinosaur import primitive_equations
from tqdm import tqdm

import weatherens
from weatherens import config as config_mod
from weatherens import files
from weatherens import grid as grid_mod
from weatherens.config import WorldConfig
from weatherens.errors import InputError
from weatherens.world.model import (
    DESCRIPTION,
    LEVEL_VARIABLES,
    REFERENCES,
    STATE_FIELDS,
    STATE_GROUP,
    VARIABLE_ATTRS,
    TruthModel,
    chunk_fn,
    initial_state,
    interpolate_state,
    spinup_fine_intervals,
    spinup_model,
    truth_model,
)

log = logging.getLogger(__name__)

COMPLETE_ATTR = "weatherens_world_complete"
CONFIG_ATTR = "weatherens_world_config"
_ROOT_ARRAYS = (*VARIABLE_ATTRS, "time")  # what a frames append grows along `time`
_STATE_ARRAYS = (*STATE_FIELDS, "sim_time", "state_time")  # what a state append grows along `state_time`
_ZARR_TEMPORARY = re.compile(r".+\.[0-9a-f]{32}\.partial")  # zarr's atomic-write temporaries, left by a kill


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """The run in archive intervals: spin-up, archived frames, and chunks that each start at a saved state."""

    interval_days: float
    n_spin: int
    n_frames: int
    per_state: int

    @classmethod
    def of(cls, cfg: WorldConfig) -> _Schedule:
        interval_days = cfg.archive_hours / 24
        return cls(interval_days, round(cfg.spinup_days / interval_days), round(cfg.years * 365 / interval_days),
                   round(cfg.state_every_days / interval_days))

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_frames / self.per_state)

    def first(self, chunk: int) -> int:
        """Index of the chunk's first frame (n_frames past the last chunk)."""
        return min(chunk * self.per_state, self.n_frames)

    def frames(self, chunk: int) -> int:
        return self.first(chunk + 1) - self.first(chunk)


def _group(group: zarr.Group, name: str) -> zarr.Group:
    """`group[name]`, a subgroup in this store's layout (zarr types a member as array or group)."""
    return cast(zarr.Group, group[name])


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """`group[name]`, an array in this store's layout (zarr types a member as array or group)."""
    return cast(zarr.Array, group[name])


def _read(group: zarr.Group, name: str, selection: int | slice) -> np.ndarray:
    """`group[name][selection]`: a numpy array (zarr types a read as any array-like or scalar)."""
    return cast(np.ndarray, _array(group, name)[selection])


def _config_json(cfg: WorldConfig) -> str:
    return json.dumps(config_mod.to_dict(cfg), sort_keys=True)


def _config_diff(stored: str | None, cfg: WorldConfig) -> str:
    """'' if a store's config attribute is `cfg`, else the differences, for a message."""
    theirs, ours = json.loads(stored or "{}"), json.loads(_config_json(cfg))
    return ", ".join(f"{k}: store has {theirs.get(k)!r}, asked for {ours[k]!r}"
                     for k in sorted(ours) if theirs.get(k) != ours[k])


def world_config(path: str | Path) -> WorldConfig:
    """The WorldConfig a world store was built with (from its attributes)."""
    attrs = zarr.open_group(str(path), mode="r").attrs
    if CONFIG_ATTR not in attrs:
        raise InputError(f"{path}: not a weatherens physics world (no {CONFIG_ATTR!r} attribute)")
    fields = json.loads(cast(str, attrs[CONFIG_ATTR]))
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return WorldConfig(**kwargs)


def _check_existing(out: Path, cfg: WorldConfig) -> None:
    try:
        attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    except Exception as err:  # noqa: BLE001 - any unreadable store is reported the same way
        raise InputError(f"{out}: exists but is not a readable zarr store ({err}); remove it or choose another path") from err
    if not attrs.get(COMPLETE_ATTR):
        raise InputError(f"{out}: exists but is not a complete physics world; remove it to rebuild")
    diff = _config_diff(cast("str | None", attrs.get(CONFIG_ATTR)), cfg)
    if diff:
        raise InputError(f"{out}: a physics world built with a different config ({diff}); "
                         "remove it or choose another path")


def _frames_dataset(fields: dict[str, np.ndarray], times: np.ndarray, cfg: WorldConfig) -> xr.Dataset:
    # every append replaces the root's attributes with these: the config stays from the first write on
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
    return xr.Dataset(data, coords, attrs={CONFIG_ATTR: _config_json(cfg)})


def _states_dataset(model: TruthModel, state: primitive_equations.State, time: np.datetime64, sim_time: float) -> xr.Dataset:
    m, l = model.coords.horizontal.modal_axes
    spectral = ("longitudinal_wavenumber", "total_wavenumber")
    data: dict[str, tuple[Any, ...]] = {k: (("state_time", "sigma", *spectral), np.asarray(getattr(state, k))[None])
                                        for k in ("vorticity", "divergence", "temperature_variation")}
    data["log_surface_pressure"] = (("state_time", "surface", *spectral), np.asarray(state.log_surface_pressure)[None])
    data["sim_time"] = (("state_time",), np.array([sim_time]),
                        {"long_name": "nondimensional model time since the start of the spin-up"})
    coords = {"state_time": ("state_time", np.array([time], "datetime64[ns]")), "sigma": model.coords.vertical.centers,
              "longitudinal_wavenumber": np.asarray(m), "total_wavenumber": np.asarray(l)}
    return xr.Dataset(data, coords, attrs={
        "description": "dinosaur primitive_equations.State in modal (spectral) form, nondimensional units "
                       "(PrimitiveEquationsSpecs.from_si); rebuild the model with weatherens.world.model.truth_model",
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
    `out + '.partial'` and renamed when complete. A partial left by a killed build of the same
    config is resumed, bitwise as if never killed; any other partial is removed (module docstring).
    Raises ValueError if `out` holds a world built with another config.
    """
    out = Path(out)
    if out.exists():
        _check_existing(out, cfg)
        return out
    model = truth_model(cfg)
    sched = _Schedule.of(cfg)
    partial = out.with_name(out.name + ".partial")
    resumed = _resume(partial, cfg, sched)
    if resumed is None:
        _start(partial, cfg)
        chunk, state = 0, _spin_up(model, cfg, sched, progress)
    else:
        chunk, state = resumed

    start, step = np.datetime64(cfg.start, "ns"), np.timedelta64(cfg.archive_hours, "h")
    days = sched.interval_days
    with tqdm(total=sched.n_frames * days, initial=sched.first(chunk) * days, unit="day", desc="archive",
              disable=not progress) as bar:
        pending = None  # the previous chunk's frames, written while this chunk computes (async dispatch)
        for k in range(chunk, sched.n_chunks):
            first, frames = sched.first(k), sched.frames(k)
            sim_time = model.model_time((sched.n_spin + first) * days)
            state = dataclasses.replace(state, sim_time=jnp.float32(sim_time))
            _append(_states_dataset(model, state, start + first * step, sim_time),
                    partial, "state_time", STATE_GROUP, k == 0, cfg.start)
            state, fields = chunk_fn(model, frames)(state)
            if pending is not None:
                _append_frames(*pending, partial, cfg)
                bar.update(pending[1].size * days)
            pending = (fields, start + (first + np.arange(frames)) * step, k == 0)
        if pending is not None:
            _append_frames(*pending, partial, cfg)
            bar.update(pending[1].size * days)
    _finish(partial, cfg, model, sched)
    partial.rename(out)
    return out


def _append_frames(fields, times: np.ndarray, first_chunk: bool, partial: Path, cfg: WorldConfig) -> None:
    """Append one chunk's archived frames (waits for their computation). Appends stay in the order
    state k, frames k - 1, state k + 1, ...: frames k - 1 whole still means every earlier append is."""
    _append(_frames_dataset(jax.device_get(fields), times, cfg), partial, "time", None, first_chunk, cfg.start)


def _start(partial: Path, cfg: WorldConfig) -> None:
    """A new, empty partial that already names its config."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    zarr.open_group(str(partial), mode="w", zarr_format=3, attributes={CONFIG_ATTR: _config_json(cfg)})


def _spin_up(model: TruthModel, cfg: WorldConfig, sched: _Schedule, progress: bool) -> primitive_equations.State:
    """The state after `sched.n_spin` archive intervals from `initial_state`: the first part at the
    coarse `spinup_model` (if any), interpolated to the truth's truncation for the last
    `spinup_fine_intervals` (with none, the truth starts from the coarse model's initial state)."""
    coarse = spinup_model(cfg)
    n_coarse = sched.n_spin - spinup_fine_intervals(cfg, sched.n_spin)
    state = initial_state(model if coarse is None else coarse, cfg.seed)
    with tqdm(total=sched.n_spin * sched.interval_days, unit="day", desc="spin-up", disable=not progress) as bar:
        for i in range(1, sched.n_spin + 1):
            if coarse is not None and i == n_coarse + 1:
                state = interpolate_state(state, coarse, model)
            # (n_coarse is 0 without a coarse model)
            state = (coarse if coarse is not None and i <= n_coarse else model).advance(state)
            if i % 4 == 0 or i == sched.n_spin:  # wait now and then, so the bar shows computed (not queued) days
                jax.block_until_ready(state)
                bar.update(bar.total * i / sched.n_spin - bar.n)
    if coarse is not None and n_coarse == sched.n_spin:
        state = interpolate_state(state, coarse, model)
    return state


def _resume(partial: Path, cfg: WorldConfig, sched: _Schedule) -> tuple[int, primitive_equations.State | None] | None:
    """Where a build goes on from a killed build's partial: (chunk, saved state at its start), with the
    partial cut back to that chunk's start; or None, the partial removed, to start over.

    A partial whose loop had finished (complete, but not renamed) gives (n_chunks, None).
    """
    if not partial.exists():
        return None
    reason = ""
    try:
        root = zarr.open_group(str(partial), mode="r+", use_consolidated=False)
        diff = _config_diff(cast("str | None", root.attrs.get(CONFIG_ATTR)), cfg)
        if diff:
            reason = f"was started with another config ({diff})"
        elif root.attrs.get(COMPLETE_ATTR):
            log.warning("world: %s is complete but was not renamed; finishing it", partial)
            return sched.n_chunks, None
        else:
            chunk = _last_whole_chunk(root, cfg, sched)
            if chunk is None:
                reason = "holds no whole saved state (killed during the spin-up)"
            else:
                state = _saved_state(_group(root, STATE_GROUP), chunk)
    except Exception as err:  # noqa: BLE001 - whatever is wrong with it, a partial is only a cache
        reason = f"is unreadable ({type(err).__name__}: {err})"
    if reason:
        log.warning("world: %s %s; starting over", partial, reason)
        shutil.rmtree(partial)
        return None
    assert chunk is not None  # else `reason` is set
    log.warning("world: resuming %s: %d of %d chunks kept, going on from archived day %g of %g",
                partial, chunk, sched.n_chunks, sched.first(chunk) * sched.interval_days,
                sched.n_frames * sched.interval_days)
    if chunk == 0:  # only the state after the spin-up is kept: a fresh partial creates the arrays as a new build does
        shutil.rmtree(partial)
        _start(partial, cfg)
    else:
        _cut_back(partial, root, chunk, sched)
    return chunk, state


def _last_whole_chunk(root: zarr.Group, cfg: WorldConfig, sched: _Schedule) -> int | None:
    """The last chunk whose start state and every earlier frame are whole in the partial, or None.

    zarr writes each file atomically, but an append is many files: xarray resizes an array and
    writes its new part, then the next array. So a kill can leave arrays of different lengths, or an
    array resized whose new part never came (it reads as the fill value: NaN for the fields, 0 for
    the time). Chunk k qualifies when every array is long enough, the fields of state k are all
    finite, and the frames of chunk k-1 are finite in every variable and their times are right.
    The appends run one after another (state k, then the frames of chunk k-1, written while chunk k
    computes), so the frames of chunk k-1 being whole means every earlier append finished, state k
    included (sim_time and state_time of state k itself are written again on resume).
    """
    states = _group(root, STATE_GROUP) if STATE_GROUP in root else None

    def length(group: zarr.Group | None, name: str) -> int:
        return _array(group, name).shape[0] if group is not None and name in group else 0

    frames_len = min(length(root, n) for n in _ROOT_ARRAYS)
    states_len = min(length(states, n) for n in _STATE_ARRAYS)
    fields_len = min(length(states, n) for n in STATE_FIELDS)
    for k in reversed(range(sched.n_chunks)):
        if frames_len < sched.first(k) or states_len < k or fields_len < k + 1:
            continue
        assert states is not None  # fields_len >= k + 1 > 0
        if not all(np.isfinite(_read(states, n, k)).all() for n in STATE_FIELDS):
            continue
        if k == 0:
            return 0
        a, b = sched.first(k - 1), sched.first(k)
        times_ok = np.array_equal(_read(root, "time", slice(a, b)),
                                  np.arange(a, b) * cfg.archive_hours)  # "hours since start"
        if times_ok and all(np.isfinite(_read(root, n, slice(a, b))).all() for n in VARIABLE_ATTRS):
            return k
    return None


def _saved_state(states: zarr.Group, k: int) -> primitive_equations.State:
    """State k as saved: the float32 fields exactly as the run held them (sim_time is set per chunk)."""
    return primitive_equations.State(**{n: jnp.asarray(_read(states, n, k)) for n in STATE_FIELDS},
                                     sim_time=jnp.float32(0.0))


def _cut_back(partial: Path, root: zarr.Group, chunk: int, sched: _Schedule) -> None:
    """Cut every array back to the start of `chunk` (its state too: it is appended again)."""
    for path in partial.rglob("*.partial"):
        if _ZARR_TEMPORARY.fullmatch(path.name):
            path.unlink()
    cuts = [(_array(root, n), sched.first(chunk)) for n in _ROOT_ARRAYS]
    cuts += [(_array(_group(root, STATE_GROUP), n), chunk) for n in _STATE_ARRAYS]
    for array, length in cuts:
        if array.shape[0] != length:
            array.resize((length, *array.shape[1:]))  # also deletes the chunks past the end


def _finish(partial: Path, cfg: WorldConfig, model: TruthModel, sched: _Schedule) -> None:
    root = zarr.open_group(str(partial), mode="a", use_consolidated=False)
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
        "spinup_days_run": sched.n_spin * sched.interval_days,
        "spinup": _spinup_summary(cfg, sched),
    })
    root.attrs[COMPLETE_ATTR] = True
    files.consolidate_zarr(partial)


def _spinup_summary(cfg: WorldConfig, sched: _Schedule) -> str:
    days, fine = sched.n_spin * sched.interval_days, spinup_fine_intervals(cfg, sched.n_spin)
    if fine == sched.n_spin:
        return f"{days:g} days at {cfg.resolution}"
    return (f"{days:g} days, the last {fine * sched.interval_days:g} at {cfg.resolution} after "
            f"{cfg.spinup_resolution} (spectral interpolation)")


def _store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def describe(path: str | Path) -> str:
    """A human summary of a world: times, grid, variables, a few physical numbers, size, settings."""
    path = Path(path)
    ds = xr.open_zarr(str(path))
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
        t850 = float(grid_mod.area_mean(sample.temperature.sel(level=850).values, ds.latitude.values).mean())
        numbers.append(f"global-mean T850 {t850:.1f} K")
    if "geopotential" in ds and 500 in ds.level:
        z500 = sample.geopotential.sel(level=500)
        numbers.append(f"z500 {z500.min().item():.0f} .. {z500.max().item():.0f} m**2 s**-2")
    if "u_component_of_wind" in ds and 250 in ds.level:
        u250 = sample.u_component_of_wind.sel(level=250).mean(("longitude", "time")).max().item()
        numbers.append(f"max zonal-mean u250 {u250:.1f} m s**-1")
    if "surface_pressure" in ds:
        ps = float(grid_mod.area_mean(sample.surface_pressure.values, ds.latitude.values).mean())
        numbers.append(f"global-mean surface pressure {ps:.0f} Pa")
    lines.append(f"  sampled ({sample.sizes['time']} times): " + "; ".join(numbers))
    lines.append(f"  truth: {ds.attrs.get('source', '?')}")
    lines.append(f"  config: {ds.attrs.get(CONFIG_ATTR, '?')}")
    lines.append(f"  versions: weatherens {ds.attrs.get('weatherens_version', '?')}, dinosaur {ds.attrs.get('dinosaur_version', '?')}")
    return "\n".join(lines)

