"""Analysis of the physics world's archive: a full dinosaur model state from the archived fields.

The archive holds u, v and T on a few pressure levels, the 2 m temperature and surface pressure on
the 64 x 32 grid; a physics ensemble needs a model state (modal vorticity, divergence, temperature
and log surface pressure on sigma layers). `reconstruct_state` analyses one archived time into
such a state on any model's grid, as a simple analysis would; `analysis_state` adds the mean
error of that analysis learnt where the truth is known (`initial_uncertainty`): a bias-corrected
analysis, the start of the operational analogue and of the predictability limit (`ensembles`).

References: Kochkov, D. et al., 2024, Nature 632, 1060-1066 (dinosaur); Jones, P. W., 1999, Mon.
Wea. Rev. 127, 2204-2210 (first-order conservative remapping, the archive's regridding inverted here).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from dinosaur import held_suarez, horizontal_interpolation, primitive_equations, scales, sigma_coordinates, spherical_harmonic
from dinosaur import vertical_interpolation as vi

from weatherens import grid as grid_mod
from weatherens.config import WorldConfig
from weatherens.world import initial_uncertainty
from weatherens.world import model as world_mod

State: TypeAlias = primitive_equations.State


def analysis_state(model: world_mod.TruthModel, fields: xr.Dataset, cfg: WorldConfig,
                   errors: initial_uncertainty.ErrorSample) -> State:
    """The archive-consistent initial state on `model`'s grid: `reconstruct_state` plus the sample's
    mean error (its zonal part, truncated to the model), i.e. a bias-corrected analysis."""
    return initial_uncertainty.add(reconstruct_state(model, fields, cfg), errors.bias)


def reconstruct_state(model: world_mod.TruthModel, fields: xr.Dataset, cfg: WorldConfig) -> State:
    """A dinosaur State on `model`'s grid from one time of a world's archive (`fields`, canonical form).

    From u, v (m/s), temperature (K) on the levels (P, nlat, nlon), 2m_temperature (K; in this
    world the truth's lowest sigma layer) and surface_pressure (Pa), as a simple analysis would:
    horizontally, the archive's conservative regridding inverted (the model-grid field nearest a
    conservative regridding of the archive whose own cell averages are the archived values);
    vertically, a background profile linear in log p (winds held constant above and below the levels, temperature
    extrapolated down through 2m_temperature and up to no colder than Held-Suarez's 200 K), then
    the smallest change per column for which the model's own archive operator (sigma -> pressure,
    linear in log p) gives back the archived values; vorticity and divergence by the spherical
    harmonic transform, the divergence's mass-weighted vertical mean removed (it would only drive
    spurious surface-pressure tendencies); log surface pressure.
    """
    bottom = float(sigma_coordinates.SigmaCoordinates.equidistant(cfg.layers).centers[-1])
    fn = _analysis_fn(model, tuple(sorted(cfg.levels)), cfg.nlon, cfg.nlat, bottom)
    return fn(*(jnp.asarray(fields[v].values, jnp.float32) for v in _ANALYSIS_VARIABLES))


_ANALYSIS_VARIABLES = ("u_component_of_wind", "v_component_of_wind", "temperature", "2m_temperature", "surface_pressure")
_MIN_T = inspect.signature(held_suarez.HeldSuarezForcing).parameters["minT"].default  # 200 K


def _column(x, xp, fp, floor):
    """Background profile of one column: targets x (L,), sources xp (S,) (log p), values fp (S,)."""
    order = jnp.argsort(xp)
    xp, fp = xp[order], fp[order]
    y = jax.vmap(vi.linear_interp_with_linear_extrap, (0, None, None))(x, xp, fp)
    if floor is None:  # winds: constant outside the levels
        return jnp.where(x < xp[0], fp[0], jnp.where(x > xp[-1], fp[-1], y))
    return jnp.where(x < xp[0], jnp.maximum(y, floor), y)  # temperature


_columns = jnp.vectorize(_column, signature="(a),(b),(b)->(a)", excluded=(3,))


@functools.lru_cache(maxsize=8)
def _analysis_fn(model: world_mod.TruthModel, levels: tuple[int, ...], nlon: int, nlat: int, bottom: float) -> Callable:
    """Jitted (u, v, T (P, lat, lon), T2m, ps (lat, lon)) on the archive grid -> State (see reconstruct_state)."""
    horizontal, specs, units = model.coords.horizontal, model.physics_specs, scales.units
    lon, lat = np.deg2rad(grid_mod.longitudes(nlon)), np.deg2rad(grid_mod.equiangular_latitudes(nlat))
    hi = horizontal_interpolation
    a_lon = np.asarray(hi.conservative_longitude_weights(horizontal.longitudes, lon))  # model -> archive
    a_lat = np.asarray(hi.conservative_latitude_weights(horizontal.latitudes, lat))
    g_lon = np.asarray(hi.conservative_longitude_weights(lon, horizontal.longitudes))  # archive -> model
    g_lat = np.asarray(hi.conservative_latitude_weights(lat, horizontal.latitudes))
    log_p = np.log(np.asarray(levels, np.float64) * 100.0)  # Pa
    log_sigma = np.log(model.coords.vertical.centers)
    thickness = np.asarray(model.coords.vertical.layer_thickness)[:, None, None]
    wind, kelvin = specs.nondimensionalize(1.0 * units.m / units.s), specs.nondimensionalize(1.0 * units.degK)
    pascal, min_t = specs.nondimensionalize(1.0 * units.pascal), _MIN_T.m_as(units.degK)
    ref = np.asarray(model.reference_temperature)[:, None, None]
    to_p = vi.vectorize_vertical_interpolation(vi.linear_interp_with_linear_extrap)  # as the archive operator

    def regrid(x):  # (..., lat, lon) archive -> (..., lon, lat) model: smooth first guess + least-squares fix
        first = jnp.einsum("ab,cd,...db->...ac", g_lon, g_lat, x, precision=jax.lax.Precision.HIGHEST)
        residual = x - jnp.einsum("ab,cd,...bd->...ca", a_lon, a_lat, first, precision=jax.lax.Precision.HIGHEST)
        return first + jnp.einsum("ab,cd,...db->...ac", np.linalg.pinv(a_lon), np.linalg.pinv(a_lat), residual,
                                  precision=jax.lax.Precision.HIGHEST)

    def fit(background, archived, log_ps):  # (L, lon, lat), (P, lon, lat): smallest change with to_p == archived
        target = log_p[:, None, None] - log_ps  # log(p / ps), (P, lon, lat)
        h = jax.vmap(lambda e: to_p(target, log_sigma, jnp.broadcast_to(e[:, None, None], background.shape)))(
            jnp.eye(log_sigma.size, dtype=background.dtype))  # (L, P, lon, lat)
        h = jnp.moveaxis(h, (0, 1), (-1, -2))  # (lon, lat, P, L)
        residual = jnp.moveaxis(archived - to_p(target, log_sigma, background), 0, -1)
        return background + jnp.moveaxis(jnp.einsum("...lp,...p->...l", jnp.linalg.pinv(h), residual), -1, 0)

    def analysis(u, v, temperature, t2m, surface_pressure) -> State:
        ps = regrid(surface_pressure)  # Pa, (lon, lat)
        log_ps = jnp.log(ps)
        x = jnp.moveaxis(log_sigma[:, None, None] + log_ps, 0, -1)  # log p of the model layers, (lon, lat, L)
        xp = jnp.broadcast_to(log_p, ps.shape + log_p.shape)
        u, v, temperature = regrid(u), regrid(v), regrid(temperature)
        u_s, v_s = (fit(jnp.moveaxis(_columns(x, xp, jnp.moveaxis(f, 0, -1), None), -1, 0), f, log_ps) for f in (u, v))
        xp_t = jnp.concatenate([xp, (np.log(bottom) + log_ps)[..., None]], -1)
        f_t = jnp.concatenate([jnp.moveaxis(temperature, 0, -1), regrid(t2m)[..., None]], -1)
        t_s = fit(jnp.moveaxis(_columns(x, xp_t, f_t, min_t), -1, 0), temperature, log_ps)
        vorticity, divergence = spherical_harmonic.uv_nodal_to_vor_div_modal(horizontal, u_s * wind, v_s * wind)
        divergence = divergence - jnp.sum(divergence * thickness, axis=0, keepdims=True)
        return State(vorticity=vorticity, divergence=divergence,
                     temperature_variation=horizontal.to_modal(t_s * kelvin - ref),
                     log_surface_pressure=horizontal.to_modal((log_ps + np.log(pascal))[None]),
                     sim_time=jnp.float32(0.0))

    return jax.jit(analysis)
