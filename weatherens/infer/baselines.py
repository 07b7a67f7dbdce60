"""Statistical baselines in the ML ensemble's output format: persistence and a climatological ensemble.

- `persistence`: one member, x(t0) at every lead (its CRPS is its absolute error).
- `climatology`: M members, each a trajectory of the truth from the training split: member j at lead
  L is x(tau_j + L), with tau_j drawn (from the seed, t0 and j) among the training times at the same
  time of day whose day of year lies within `window_days` of t0's (all training times when
  window_days is None: right for a world without seasons). Trajectories keep each member's
  temporal coherence; the ensemble samples the climate of the training years (the "climatological
  ensemble" of WeatherBench 2 / Rasp et al. 2024 and of the Huge Ensembles comparisons).

The physics ensembles are in `physics_ensemble`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from weatherens.config import TimeRange
from weatherens.data import era5, names
from weatherens.data.pipeline import channel_names, read_states
from weatherens.errors import InputError
from weatherens.infer.output import MEMBER_CHUNK, ForecastWriter


def _open(store: str, variables: Sequence[str], levels: Sequence[int]):
    variables = tuple(names.long_name(v) for v in variables)
    ds = era5.open(store, variables, tuple(levels))
    return ds, variables, channel_names(ds, variables)


def _check_inits(ds, store: str, init_times, times_needed) -> None:
    """InputError naming the store when it lacks a time that the forecasts from `init_times` read."""
    if len(init_times) == 0:
        raise InputError("--init-times: none given")
    absent = np.setdiff1d(np.asarray(times_needed, "datetime64[ns]").ravel(), ds["time"].values)
    if absent.size:
        raise InputError(f"{store}: no states at {', '.join(str(np.datetime64(t, 'h')) for t in absent[:4])}"
                         f"{' ...' if absent.size > 4 else ''} (the store covers {np.datetime64(ds['time'].values[0], 'h')}"
                         f" .. {np.datetime64(ds['time'].values[-1], 'h')})")


def _leads(lead_hours: int, timestep_hours: int) -> np.ndarray:
    if lead_hours <= 0 or lead_hours % timestep_hours:
        raise InputError(f"--lead-hours {lead_hours}: must be a positive multiple of the store's step ({timestep_hours} h)")
    return np.arange(1, lead_hours // timestep_hours + 1) * np.timedelta64(timestep_hours, "h")


def persistence(store: str, init_times: np.ndarray, lead_hours: int, out: str | Path, *, variables: Sequence[str],
                levels: Sequence[int], timestep_hours: int = 6, progress: bool = True) -> Path:
    """One-member persistence forecast of `store` from each init time; returns the store written."""
    ds, variables, channels = _open(store, variables, levels)
    leads = _leads(lead_hours, timestep_hours)
    _check_inits(ds, store, init_times, init_times)
    writer = ForecastWriter(out, channels, init_times, leads, 1, ds["latitude"].values, ds["longitude"].values,
                            member_coords={"member_source": ["persistence"], "member_perturbation": ["none"]},
                            attrs={"source": "weatherens baseline persistence", "data": str(store)},
                            variable_attrs={v: dict(ds[v].attrs) for v in variables})
    done = set(writer.completed().tolist())
    for i in tqdm([i for i in range(len(init_times)) if i not in done], desc="persistence", disable=not progress):
        x0 = read_states(ds, variables, [np.datetime64(init_times[i], "ns")])[0]
        writer.write(i, slice(None), slice(0, 1), np.broadcast_to(x0, (len(leads), 1) + x0.shape))
        writer.mark_complete(i)
    written = writer.finish()
    assert written is not None  # every init is complete
    return written


def climatology_times(train_times: np.ndarray, t0, lead_max: np.timedelta64, members: int, seed: int,
                      window_days: float | None) -> np.ndarray:
    """(M,) start times tau_j for member trajectories: training times at t0's time of day, within the
    day-of-year window, whose trajectory up to lead_max stays inside the training times."""
    t0 = np.datetime64(t0, "ns")
    train_times = np.asarray(train_times, "datetime64[ns]")
    ok = np.isin(train_times + lead_max, train_times)
    ok &= (train_times - t0) % np.timedelta64(1, "D") == np.timedelta64(0)
    if window_days is not None:
        doy = lambda t: (t - t.astype("datetime64[Y]")) / np.timedelta64(1, "D")  # noqa: E731
        d = np.abs(doy(train_times) - doy(np.asarray([t0]))[0])
        ok &= np.minimum(d, 365.25 - d) <= window_days
    candidates = train_times[ok]
    if candidates.size == 0:
        raise InputError(f"no training time at {np.datetime64(t0, 'h')}'s time of day within {window_days} days of "
                         f"its day of year with a whole {lead_max / np.timedelta64(1, 'h'):g} h trajectory")
    hours = int((t0 - np.datetime64("1900-01-01", "ns")) / np.timedelta64(1, "h"))
    rng = np.random.default_rng([seed, hours])
    return rng.choice(candidates, size=members, replace=members > candidates.size)


def climatology(store: str, init_times: np.ndarray, members: int, lead_hours: int, out: str | Path, *,
                variables: Sequence[str], levels: Sequence[int], train: TimeRange, timestep_hours: int = 6,
                window_days: float | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Climatological ensemble (see module doc); returns the store written."""
    if members < 1:
        raise InputError(f"--members {members}: must be >= 1")
    ds, variables, channels = _open(store, variables, levels)
    leads = _leads(lead_hours, timestep_hours)
    train_times = ds["time"].sel(time=train.as_slice()).values
    if len(init_times) == 0:
        raise InputError("--init-times: none given")
    for t0 in init_times:  # every init has candidate trajectories before anything is written
        climatology_times(train_times, t0, leads[-1], 1, seed, window_days)
    writer = ForecastWriter(out, channels, init_times, leads, members, ds["latitude"].values, ds["longitude"].values,
                            member_coords={"member_source": ["climatology"] * members,
                                           "member_perturbation": ["none"] * members},
                            attrs={"source": "weatherens baseline climatology", "data": str(store), "seed": seed,
                                   "train": f"{train.start}..{train.end}", "window_days": str(window_days)},
                            variable_attrs={v: dict(ds[v].attrs) for v in variables})
    done = set(writer.completed().tolist())
    for i in tqdm([i for i in range(len(init_times)) if i not in done], desc="climatology", disable=not progress):
        starts = climatology_times(train_times, init_times[i], leads[-1], members, seed, window_days)
        for j in range(0, members, MEMBER_CHUNK):  # one read and one write per chunk of the output's members
            taus = starts[j : j + MEMBER_CHUNK]
            states = read_states(ds, variables, (taus[:, None] + leads[None]).ravel())  # (m L, C, lat, lon)
            states = states.reshape((len(taus), len(leads)) + states.shape[1:]).swapaxes(0, 1)
            writer.write(i, slice(None), slice(j, j + len(taus)), states)
        writer.mark_complete(i)
    written = writer.finish()
    assert written is not None  # every init is complete
    return written
