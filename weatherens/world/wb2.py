"""The physics world on WeatherBench 2's grids: a short truth run archived as WB2 publishes ERA5.

`write_wb2_store(world, out, grid)` starts the truth model from a saved state of a world store
(`load_truth_states`), advances it one archive interval at a time and writes every state on a
WeatherBench 2 grid with poles (1.5 deg: 240 x 121, 0.25 deg: 1440 x 721, or any 'NLONxNLAT'), on
the 13 WeatherBench 2 pressure levels, in WB2's layout and names (Rasp et al. 2024, the
`*_equiangular_with_poles_conservative.zarr` stores): zarr v2 with consolidated metadata, data
variables `(time, level, longitude, latitude)` and `(time, longitude, latitude)`, latitude
ascending from -90 to 90, longitude 0 to 360 - dx, one chunk per time.

The fields are the truth's spectral state synthesised at the WB2 nodes (exact for the band-limited
state, at any grid), then interpolated from sigma to pressure as the world's own archive does
(`nodal_fields_fn`). Variables: geopotential, temperature, u/v wind on the levels; 2 m temperature,
10 m u/v wind (the lowest sigma layer's), surface pressure and mean sea-level pressure (equal: the
world has no orography), and the static land_sea_mask and geopotential_at_surface (zero: an
aquaplanet without orography). No humidity: the world is dry.

Winds at the pole rows, where the components are singular (u = u cos(lat) / cos(lat)), are those
of the wind vector of the adjacent ring (its mean in Cartesian components), projected on each pole
point's east and north. The ring mean cancels the wind's first-order variation about the pole, so
the error is second order in the ring spacing (a solid-body rotation's: 1 - cos(spacing)).

Written to `<out>.partial` and renamed when complete, so `<out>` is always whole; a partial left
by a killed run is deleted and the run starts over (a few minutes at 1.5 deg).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from dinosaur import primitive_equations, spherical_harmonic
from tqdm import tqdm

from weatherens import files
from weatherens import grid as grid_mod
from weatherens.data import names
from weatherens.errors import InputError
from weatherens.world import model as world_model
from weatherens.world import store as world_store

WB2_LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)  # hPa, WeatherBench 2's 13
WB2_GRIDS = {"1.5": (240, 121), "0.25": (1440, 721), "5.625": (64, 33)}  # name -> (longitudes, latitudes with poles)
WB2_ATTR = "weatherens_wb2_world"


def wb2_grid(name: str) -> tuple[int, int]:
    """(nlon, nlat) of a WB2 grid name ('1.5', '0.25', '5.625') or of 'NLONxNLAT' (latitudes with poles)."""
    if name in WB2_GRIDS:
        return WB2_GRIDS[name]
    m = re.fullmatch(r"(\d+)x(\d+)", name.strip())
    if not m or int(m.group(1)) < 4 or int(m.group(2)) < 3:
        raise InputError(f"grid: expected one of {sorted(WB2_GRIDS)} or 'NLONxNLAT' (e.g. '240x121'), got {name!r}")
    return int(m.group(1)), int(m.group(2))


def target_grid(horizontal: spherical_harmonic.Grid, nlon: int, nlat: int) -> spherical_harmonic.Grid:
    """dinosaur's equiangular grid with poles of nlon x nlat nodes, with `horizontal`'s wavenumbers."""
    return spherical_harmonic.Grid(
        longitude_wavenumbers=horizontal.longitude_wavenumbers, total_wavenumbers=horizontal.total_wavenumbers,
        longitude_nodes=nlon, latitude_nodes=nlat, latitude_spacing="equiangular_with_poles",
        radius=horizontal.radius, spherical_harmonics_impl=horizontal.spherical_harmonics_impl)


def pole_winds(u: jax.Array, v: jax.Array, lat: np.ndarray, lon: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """u, v (..., lon, lat) with the pole rows (lat = -90 and 90) replaced by the adjacent ring's wind vector.

    At each pole the vector W = mean over the ring next to it of u e_east + v e_north (Cartesian
    x, y components), then u = W . e_east(lon), v = W . e_north(pole, lon), with
    e_east = (-sin lon, cos lon), e_north = (-sin lat cos lon, -sin lat sin lon) (horizontal parts).
    """
    lam, phi = np.deg2rad(lon), np.deg2rad(lat)
    east = (-np.sin(lam), np.cos(lam))

    def north(row: int):
        return -np.sin(phi[row]) * np.cos(lam), -np.sin(phi[row]) * np.sin(lam)

    def fill(u, v, pole: int, ring: int):
        north_ring, north_pole = north(ring), north(pole)
        wx = jnp.mean(u[..., ring] * east[0] + v[..., ring] * north_ring[0], axis=-1, keepdims=True)
        wy = jnp.mean(u[..., ring] * east[1] + v[..., ring] * north_ring[1], axis=-1, keepdims=True)
        return (u.at[..., pole].set(wx * east[0] + wy * east[1]),
                v.at[..., pole].set(wx * north_pole[0] + wy * north_pole[1]))

    u, v = fill(u, v, 0, 1)
    return fill(u, v, lat.size - 1, lat.size - 2)


def wb2_fields_fn(model: world_model.TruthModel, levels, nlon: int, nlat: int) -> tuple[Callable, np.ndarray, np.ndarray]:
    """(jitted State -> dict of float32 WB2 variables in (level, lon, lat) / (lon, lat), SI; lat; lon) in degrees."""
    grid = target_grid(model.coords.horizontal, nlon, nlat)
    nodal, si = world_model.nodal_fields_fn(model.coords, model.physics_specs, model.reference_temperature,
                                            tuple(levels), grid)
    lat, lon = grid_mod.equiangular_latitudes(nlat, with_poles=True), grid_mod.longitudes(nlon)  # WB2's, exactly
    np.testing.assert_allclose(np.deg2rad(lat), grid.latitudes, atol=1e-9)  # the nodes dinosaur synthesises at
    np.testing.assert_allclose(np.deg2rad(lon), grid.longitudes, atol=1e-9)

    def fields(state: primitive_equations.State) -> dict[str, jax.Array]:
        x = {k: value * si[k] for k, value in nodal(state).items()}
        x["u_component_of_wind"], x["v_component_of_wind"] = pole_winds(
            x["u_component_of_wind"], x["v_component_of_wind"], lat, lon)
        x["lowest_layer_u"], x["lowest_layer_v"] = pole_winds(x["lowest_layer_u"], x["lowest_layer_v"], lat, lon)
        out = {k: x[k] for k in (*world_model.LEVEL_VARIABLES, "surface_pressure")}
        out["2m_temperature"] = x["lowest_layer_temperature"]
        out["10m_u_component_of_wind"], out["10m_v_component_of_wind"] = x["lowest_layer_u"], x["lowest_layer_v"]
        out["mean_sea_level_pressure"] = x["surface_pressure"]
        return {k: value.astype(jnp.float32) for k, value in out.items()}

    return jax.jit(fields), lat, lon


_SURFACE = ("surface_pressure", "2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind",
            "mean_sea_level_pressure")
_COMMENTS = {
    "2m_temperature": "temperature of the lowest sigma layer of the truth run, standing in for the 2 m temperature",
    "10m_u_component_of_wind": "wind of the lowest sigma layer of the truth run, standing in for the 10 m wind",
    "10m_v_component_of_wind": "wind of the lowest sigma layer of the truth run, standing in for the 10 m wind",
    "mean_sea_level_pressure": "equal to the surface pressure: the world has no orography",
}


def _dataset(frames: dict[str, np.ndarray], times: np.ndarray, lat: np.ndarray, lon: np.ndarray, levels) -> xr.Dataset:
    data = {}
    for k, x in frames.items():
        dims = ("time", "longitude", "latitude") if k in _SURFACE else ("time", "level", "longitude", "latitude")
        attrs = names.attrs(k) | ({"comment": _COMMENTS[k]} if k in _COMMENTS else {})
        data[k] = xr.Variable(dims, x, attrs)
    return xr.Dataset(data, coords={"time": times, "level": ("level", np.asarray(levels, np.int64)),
                                    "latitude": ("latitude", lat), "longitude": ("longitude", lon)})


def write_wb2_store(world: str | Path, out: str | Path, grid: str = "1.5", days: float = 10.0, start: str | None = None,
                    levels=WB2_LEVELS, progress: bool = True) -> Path:
    """Archive `days` of the truth of `world` from its saved state at `start` (default: the first) at `out`.

    Returns `out`. Refuses an existing `out` (delete it to rebuild) and a `start` with no saved state.
    """
    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: exists; delete it to write another WB2 store there")
    nlon, nlat = wb2_grid(grid)
    cfg = world_store.world_config(world)
    model = world_model.truth_model(cfg)
    state_times, states = world_model.load_truth_states(world)
    index = 0 if start is None else int(np.searchsorted(state_times, np.datetime64(start, "ns")))
    if index >= state_times.size or (start is not None and state_times[index] != np.datetime64(start, "ns")):
        raise InputError(f"{world}: no saved state at {start}; saved states: {state_times[0]} ... {state_times[-1]} "
                         f"every {cfg.state_every_days:g} days")
    state = jax.tree.map(lambda x: x[index], states)
    frames_count = max(1, round(days * 24 / cfg.archive_hours))
    times = state_times[index] + np.arange(frames_count) * np.timedelta64(cfg.archive_hours, "h")
    fields, lat, lon = wb2_fields_fn(model, levels, nlon, nlat)

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    static = xr.Dataset({"land_sea_mask": (("longitude", "latitude"), np.zeros((nlon, nlat), np.float32),
                                           names.attrs("land_sea_mask")),
                         "geopotential_at_surface": (("longitude", "latitude"), np.zeros((nlon, nlat), np.float32),
                                                     names.attrs("geopotential_at_surface"))})
    for i in tqdm(range(frames_count), desc=f"WB2 {nlon}x{nlat}", unit="frame", disable=not progress):
        frame = {k: np.asarray(x)[None] for k, x in fields(state).items()}
        ds = _dataset(frame, times[i:i + 1], lat, lon, levels)
        if i == 0:
            ds = ds.merge(static.assign_coords(latitude=lat, longitude=lon))
            ds.attrs = {"title": "weatherens physics world on a WeatherBench 2 grid",
                        "description": world_model.DESCRIPTION, "references": world_model.REFERENCES,
                        WB2_ATTR: json.dumps({"world": str(world), "grid": f"{nlon}x{nlat}", "start": str(times[0]),
                                              "frames": frames_count, "levels": list(levels)})}
            encoding: dict[str, dict[str, object]] = {
                str(k): {"chunks": ds[k].shape if k in static else (1,) + ds[k].shape[1:]} for k in ds.data_vars}
            encoding["time"] = {"units": "hours since 1959-01-01", "dtype": "int64"}
            ds.to_zarr(partial, mode="w", zarr_format=2, consolidated=False, encoding=encoding)
        else:
            ds.to_zarr(partial, append_dim="time", zarr_format=2, consolidated=False)
        if i + 1 < frames_count:
            state = model.advance(state)
    files.consolidate_zarr(partial)
    partial.rename(out)
    return out
