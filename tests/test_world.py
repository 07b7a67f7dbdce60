"""The physics world: a tiny Held-Suarez run (T21, 8 layers, 5 days spin-up, 2 days archived),
and a longer one (12 daily chunks) that is killed and resumed."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
import zarr

from weatherens import cli, grid
from weatherens import data as data_mod
from weatherens.config import WorldConfig
from weatherens.data import names
from weatherens.world import model as world
from weatherens.world import store as world_store

pytestmark = pytest.mark.slow  # builds worlds

CFG = WorldConfig(
    years=2 / 365,  # 8 archived times
    seed=3,
    resolution="T21",
    layers=8,
    timestep_minutes=30.0,
    spinup_days=5.0,
    start="2001-03-01",
    state_every_days=1.0,
)
NTIMES = 2 * 24 // CFG.archive_hours
# Same model and chunk length as CFG (so the jitted functions are shared), 12 chunks of one day.
LONG = dataclasses.replace(CFG, years=12 / 365, seed=5, spinup_days=2.0)
LONG_CHUNKS = 12
CHUNK_FRAMES = 24 // CFG.archive_hours  # frames between saved states
STORE_LOG = "weatherens.world.store"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return world_store.build_world(tmp_path_factory.mktemp("world") / "truth.zarr", CFG, progress=False)


@pytest.fixture(scope="module")
def long_world(store, tmp_path_factory):
    """LONG built without interruption (after `store`, so the jitted functions are warm)."""
    return world_store.build_world(tmp_path_factory.mktemp("long") / "long.zarr", LONG, progress=False)


@pytest.fixture(scope="module")
def ds(store):
    return xr.open_zarr(store).load()


def test_schema(ds, store):
    assert dict(ds.sizes) == {"time": NTIMES, "level": 4, "latitude": 32, "longitude": 64}
    np.testing.assert_array_equal(ds.latitude, grid.equiangular_latitudes(32))
    np.testing.assert_array_equal(ds.longitude, grid.longitudes(64))
    assert ds.level.dtype == np.int64 and list(ds.level.values) == [250, 500, 700, 850]
    assert ds.level.attrs["units"] == "hPa"
    assert ds.latitude.attrs["units"] == "degrees_north" and ds.longitude.attrs["units"] == "degrees_east"
    expected_times = np.datetime64("2001-03-01", "ns") + np.arange(NTIMES) * np.timedelta64(6, "h")
    np.testing.assert_array_equal(ds.time.values, expected_times)
    assert set(ds.data_vars) == set(world.VARIABLE_ATTRS)
    for name, var in ds.data_vars.items():
        dims = ("time", "level", "latitude", "longitude") if name in world.LEVEL_VARIABLES else ("time", "latitude", "longitude")
        assert var.dims == dims, name
        assert var.dtype == np.float32, name
        assert var.attrs["units"] == names.UNITS[name], name
        assert var.attrs["long_name"], name
    raw = xr.open_zarr(store)  # lazy: encoding still knows the zarr chunks
    assert raw.temperature.encoding["chunks"] == (1, 4, 32, 64)
    assert raw["2m_temperature"].encoding["chunks"] == (1, 32, 64)
    assert "lowest sigma layer" in ds["2m_temperature"].attrs["comment"]
    assert "vorticity" not in raw and "state_time" not in raw.dims  # the subgroup stays out of the root
    assert "no moisture, no orography, no seasons" in ds.attrs["description"]
    assert json.loads(ds.attrs[world_store.CONFIG_ATTR]) == json.loads(world_store._config_json(CFG))
    assert ds.attrs["dinosaur_version"] and ds.attrs["weatherens_version"]


def test_values_are_physical(ds):
    w = xr.DataArray(grid.latitude_weights(ds.latitude.values), dims="latitude")
    assert 150 < float(ds.temperature.min()) and float(ds.temperature.max()) < 350
    assert 150 < float(ds["2m_temperature"].min()) and float(ds["2m_temperature"].max()) < 350
    z500 = ds.geopotential.sel(level=500).weighted(w).mean(("latitude", "longitude"))
    assert ((5.0e4 < z500) & (z500 < 6.0e4)).all()
    sp = ds.surface_pressure.weighted(w).mean(("latitude", "longitude"))
    np.testing.assert_allclose(sp, 1e5, rtol=0.02)  # mass is conserved from the 1000 hPa rest state
    # geopotential decreases with pressure (increases with height) at every point
    assert (ds.geopotential.diff("level") < 0).all()
    assert float(abs(ds.u_component_of_wind).max()) < 150


def test_saved_states_restart_the_truth(ds, store):
    times, states = world.load_truth_states(store)
    np.testing.assert_array_equal(times, ds.time.values[:: 4])  # one state a day
    assert states.vorticity.shape[0] == len(times) == 2
    model = world.truth_model(world_store.world_config(store))
    assert states.vorticity.shape[1:] == model.coords.modal_shape
    for i in range(len(times)):
        state = jax.tree.map(lambda x, i=i: x[i], states)
        t = 4 * i
        for k, got in model.archive(state).items():
            np.testing.assert_allclose(got, ds[k].isel(time=t), rtol=1e-5, atol=1e-5 * float(abs(ds[k]).max()), err_msg=k)
        stepped = model.archive(model.advance(state))
        for k, got in stepped.items():
            np.testing.assert_allclose(got, ds[k].isel(time=t + 1), rtol=1e-5, atol=1e-5 * float(abs(ds[k]).max()), err_msg=k)


def test_same_seed_is_bitwise_identical_and_stale_partial_is_removed(ds, tmp_path, caplog):
    out = tmp_path / "again.zarr"
    stale = out.with_name(out.name + ".partial")
    stale.mkdir()
    (stale / "junk").write_text("left by a killed run")
    with caplog.at_level(logging.WARNING, logger=STORE_LOG):
        world_store.build_world(out, CFG, progress=False)
    assert "is unreadable" in caplog.text and "starting over" in caplog.text
    assert not stale.exists()
    again = xr.open_zarr(out).load()
    for name in ds.data_vars:
        np.testing.assert_array_equal(again[name].values, ds[name].values, err_msg=name)
    other = xr.open_zarr(world_store.build_world(tmp_path / "seed4.zarr", dataclasses.replace(CFG, seed=4), progress=False))
    assert not np.array_equal(other.temperature.values, ds.temperature.values)


def test_existing_world_is_a_cache_and_a_different_config_raises(store):
    files = sorted(p for p in store.rglob("*") if p.is_file())
    before = [p.stat().st_mtime_ns for p in files]
    assert world_store.build_world(store, CFG, progress=False) == store
    assert [p.stat().st_mtime_ns for p in files] == before
    with pytest.raises(ValueError, match=f"{store}.*seed: store has 3, asked for 4"):
        world_store.build_world(store, dataclasses.replace(CFG, seed=4), progress=False)


def test_cli_world_returns_the_cached_store(store, capsys):
    overrides = [f"world.{f.name}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
                 for f in dataclasses.fields(CFG) for v in [getattr(CFG, f.name)]]
    argv = ["world", "--out", str(store), "--quiet"] + [a for o in overrides for a in ("--set", o)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "global-mean T850" in printed and "T21" in printed and f"{NTIMES} times" in printed


def test_data_open_reads_the_world(store):
    data = pytest.importorskip("weatherens.data")
    if not hasattr(data, "open"):
        pytest.skip("weatherens.data.open not written yet")
    opened = data.open(store)
    assert set(opened.data_vars) == set(world.VARIABLE_ATTRS)
    assert opened.sizes["time"] == NTIMES and list(opened.level.values) == [250, 500, 700, 850]


@pytest.mark.parametrize("name, shape", [("T21", (64, 32)), ("T42", (128, 64)), ("T63", (192, 96))])
def test_truth_grid(name, shape):
    assert world.truth_grid(name).nodal_shape == shape


def _smooth_field(g):
    """A band-limited field (degree <= 2) on dinosaur grid g's nodes, (lon, lat)."""
    lon, sin_lat = np.meshgrid(g.nodal_axes[0], g.nodal_axes[1], indexing="ij")
    cos_lat = np.sqrt(1 - sin_lat**2)
    return cos_lat**2 * np.sin(2 * lon) + sin_lat + 0.3 * cos_lat * sin_lat * np.cos(lon)


def test_interpolate_state_is_exact_spectral_interpolation():
    cfg = dataclasses.replace(CFG, resolution="T42", spinup_resolution="T21")
    fine, coarse = world.truth_model(cfg), world.spinup_model(cfg)
    assert coarse.coords.horizontal.modal_shape == (43, 23) and world.spinup_model(CFG) is None
    state = world.initial_state(coarse, 0)
    field = coarse.coords.horizontal.to_modal(_smooth_field(coarse.coords.horizontal))
    state = dataclasses.replace(state, vorticity=jax.numpy.broadcast_to(field, state.vorticity.shape))
    up = world.interpolate_state(state, coarse, fine)
    assert up.vorticity.shape == (CFG.layers, 85, 44) and up.log_surface_pressure.shape == (1, 85, 44)
    np.testing.assert_allclose(fine.coords.horizontal.to_nodal(up.vorticity[3]), _smooth_field(fine.coords.horizontal),
                               atol=2e-6)  # the same function, evaluated on the finer Gaussian grid
    down = world.interpolate_state(up, fine, coarse)
    for name in world.STATE_FIELDS:
        np.testing.assert_array_equal(getattr(down, name), getattr(state, name))


def test_coarse_spinup_ends_at_the_truth_resolution():
    """The spin-up's coarse part (T10 here) hands over to the truth's (T21) for its last half day,
    whose dynamics fill the degrees above the coarse truncation (zero without that last part)."""
    def spun_up(final_days):
        cfg = dataclasses.replace(CFG, spinup_resolution="T10", spinup_days=1.0, spinup_final_days=final_days)
        model = world.truth_model(cfg)
        state = world_store._spin_up(model, cfg, world_store._Schedule.of(cfg), progress=False)
        assert state.vorticity.shape == (CFG.layers, *model.coords.horizontal.modal_shape)
        assert bool(jax.numpy.isfinite(state.temperature_variation).all())
        return np.abs(np.asarray(state.temperature_variation)[:, 21:, 11:]).max()  # m > 10 and l > 10

    assert spun_up(0.0) == 0.0
    assert spun_up(0.5) > 1e-5


def test_bad_config_fails_early(tmp_path):
    with pytest.raises(ValueError, match="resolution"):
        world.truth_grid("42")
    with pytest.raises(ValueError, match="spinup_resolution"):
        world_store.build_world(tmp_path / "x.zarr", dataclasses.replace(CFG, spinup_resolution="42"))
    # a spin-up truncation not coarser than the truth's means no coarse part (the default T21 at T15)
    assert world.spinup_model(dataclasses.replace(CFG, resolution="T15")) is None
    assert world.spinup_model(dataclasses.replace(CFG, spinup_resolution="T42")) is None
    assert world_store.spinup_fine_intervals(dataclasses.replace(CFG, spinup_resolution="T10", spinup_final_days=0.1), 20) == 0
    with pytest.raises(ValueError, match="timestep_minutes"):
        world_store.build_world(tmp_path / "x.zarr", dataclasses.replace(CFG, timestep_minutes=7.0))
    assert not (tmp_path / "x.zarr").exists()


class _Killed(Exception):
    """Stands in for SIGKILL inside the build (the partial stays as it is)."""


def _build_killed(monkeypatch, out: Path, cfg, where: str, call: int, after: bool = False) -> Path:
    """build_world(out, cfg), killed at the `call`-th call of world_store.`where` (before it, or just after it)."""
    real, calls = getattr(world_store, where), []

    def killing(*args, **kwargs):
        calls.append(None)
        if len(calls) == call and not after:
            raise _Killed(where)
        result = real(*args, **kwargs)
        if len(calls) == call:
            raise _Killed(where)
        return result

    with monkeypatch.context() as m:
        m.setattr(world_store, where, killing)
        with pytest.raises(_Killed):
            world_store.build_world(out, cfg, progress=False)
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and partial.exists()
    return partial


def _assert_same_files(got: Path, want: Path) -> None:
    """Bitwise identical stores: the same files with the same bytes (data, metadata, attributes)."""
    files = sorted(str(p.relative_to(want)) for p in want.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file()) == files
    for f in files:
        assert (got / f).read_bytes() == (want / f).read_bytes(), f


def _chunks_kept(log_text: str) -> int:
    m = re.search(r"resuming .*: (\d+) of (\d+) chunks kept", log_text)
    assert m, log_text
    return int(m.group(1))


@pytest.mark.parametrize("cfg, where, call, after, said", [
    (CFG, "_append", 1, False, "holds no whole saved state (killed during the spin-up); starting over"),
    (CFG, "_append", 2, False, "0 of 2 chunks kept"),  # the state after the spin-up is whole: the spin-up is not redone
    (CFG, "_finish", 1, True, "is complete but was not renamed; finishing it"),
    (dataclasses.replace(CFG, seed=4), "_append", 2, False,
     "was started with another config (seed: store has 4, asked for 3); starting over"),
])
def test_partial_is_resumed_or_replaced(store, tmp_path, monkeypatch, caplog, cfg, where, call, after, said):
    out = tmp_path / "w.zarr"
    _build_killed(monkeypatch, out, cfg, where, call, after)
    with caplog.at_level(logging.WARNING, logger=STORE_LOG):
        assert world_store.build_world(out, CFG, progress=False) == out
    assert said in caplog.text
    _assert_same_files(out, store)


def test_inconsistent_partial_is_cut_back_to_the_last_whole_chunk(long_world, tmp_path, monkeypatch, caplog):
    out = tmp_path / "w.zarr"
    partial = _build_killed(monkeypatch, out, LONG, "_append", 8)  # before frames 3: states 0-3, frames of chunks 0-2
    sched = world_store._Schedule.of(LONG)
    root = zarr.open_group(str(partial), mode="r+")

    def last_whole() -> int:
        return world_store._last_whole_chunk(root, LONG, sched)

    def resized_never_written(array, keep: int) -> None:  # what a kill between zarr's resize and write leaves
        n = array.shape[0]
        array.resize((keep, *array.shape[1:]))
        array.resize((n, *array.shape[1:]))

    assert last_whole() == 3
    resized_never_written(root["physics_state/divergence"], 3)  # state 3 half written
    assert last_whole() == 2
    resized_never_written(root["time"], CHUNK_FRAMES)  # chunk 1's times read as 0 (the fill value): not whole
    assert last_whole() == 1
    root["temperature"].resize((CHUNK_FRAMES + 1, 4, 32, 64))  # arrays of different lengths, some longer than the rest
    root["v_component_of_wind"].resize((16, 4, 32, 64))
    root["physics_state/sim_time"].resize((2,))
    assert last_whole() == 1

    first_chunk = [partial / "temperature/c/0/0/0/0", partial / "physics_state/vorticity/c/0/0/0/0"]
    mtimes = [p.stat().st_mtime_ns for p in first_chunk]
    with caplog.at_level(logging.WARNING, logger=STORE_LOG):
        world_store.build_world(out, LONG, progress=False)
    assert _chunks_kept(caplog.text) == 1
    assert [(out / p.relative_to(partial)).stat().st_mtime_ns for p in first_chunk] == mtimes
    _assert_same_files(out, long_world)


def _frames_written(partial: Path) -> int:
    try:
        return json.loads((partial / "time" / "zarr.json").read_text())["shape"][0]
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_build_is_never_mistaken_for_whole_and_resumes_bitwise(long_world, tmp_path, caplog):
    out, config = tmp_path / "killed.zarr", tmp_path / "long.yaml"
    partial = out.with_name(out.name + ".partial")
    config.write_text("world:\n" + "".join(f"  {f.name}: {json.dumps(getattr(LONG, f.name))}\n"
                                             for f in dataclasses.fields(LONG)))
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "weatherens", "world", "--out", str(out), "--config", str(config),
                                 "--quiet"], cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300
        # chunk 1's frames have begun, so chunk 0 and state 1 are whole; 10 more chunks to go
        while _frames_written(partial) < 2 * CHUNK_FRAMES:
            assert proc.poll() is None, f"the build ended before it was killed: {stderr.read_text()}"
            assert time.monotonic() < deadline, "the build did not get going"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and partial.exists()
    with pytest.raises(FileNotFoundError):
        data_mod.open(out)

    first_chunk = [partial / "temperature/c/0/0/0/0", partial / "physics_state/vorticity/c/0/0/0/0"]
    mtimes = [p.stat().st_mtime_ns for p in first_chunk]
    with caplog.at_level(logging.WARNING, logger=STORE_LOG):
        world_store.build_world(out, LONG, progress=False)
    assert 1 <= _chunks_kept(caplog.text) < LONG_CHUNKS
    assert not partial.exists()
    assert [(out / p.relative_to(partial)).stat().st_mtime_ns for p in first_chunk] == mtimes
    _assert_same_files(out, long_world)


def test_wb2_store_is_the_truth_synthesised_on_a_grid_with_poles(store, tmp_path):
    from weatherens.sphere.sht import SphericalHarmonicTransform
    from weatherens.world import wb2

    out = wb2.write_wb2_store(store, tmp_path / "wb2.zarr", "128x65", days=1.25, levels=(100, 500, 1000), progress=False)
    raw = xr.open_zarr(out, consolidated=True)
    assert raw["temperature"].dims == ("time", "level", "longitude", "latitude")  # WB2's order
    assert (out / ".zmetadata").exists() and not (tmp_path / "wb2.zarr.partial").exists()
    opened = data_mod.open(out)
    np.testing.assert_array_equal(opened["latitude"].values, np.linspace(-90, 90, 65))
    np.testing.assert_array_equal(opened["longitude"].values, np.arange(128) * 360 / 128)
    assert all(np.isfinite(opened[v].values).all() for v in opened.data_vars)
    # the lowest layer's temperature is band-limited (T21): analysed on the 65 rows with poles and
    # synthesised on the truth's Gaussian rows it is dinosaur's own field there, at the saved states
    times, states = world.load_truth_states(store)
    model = world.truth_model(world_store.world_config(store))
    h = model.coords.horizontal
    lat_truth = np.rad2deg(np.asarray(h.latitudes))
    lmax = h.total_wavenumbers - 1
    on_poles = SphericalHarmonicTransform(opened["latitude"].values, 128, lmax)
    on_truth = SphericalHarmonicTransform(lat_truth, h.nodal_shape[0], lmax)
    scale = model.physics_specs.dimensionalize(1.0, world.scales.units.degK).m
    assert opened["time"].values[0] == times[0] and opened["time"].values[4] == times[1]
    for frame, saved in ((0, 0), (4, 1)):
        t2m = np.asarray(opened["2m_temperature"].values[frame], np.float64)
        resynthesised = np.asarray(on_truth.synthesis(on_poles.analysis(t2m)))
        state = jax.tree.map(lambda x: x[saved], states)
        expected = (np.asarray(h.to_nodal(state.temperature_variation))[-1] + model.reference_temperature[-1]) * scale
        np.testing.assert_allclose(resynthesised, expected.T, atol=2e-3)  # (lat, lon); float32 fields, K
    np.testing.assert_array_equal(opened["surface_pressure"].values, opened["mean_sea_level_pressure"].values)


def test_wb2_pole_winds_of_a_solid_body_rotation():
    from weatherens.world import wb2

    lat, lon = np.linspace(-90, 90, 121), np.arange(240) * 1.5
    lam, phi = np.meshgrid(np.deg2rad(lon), np.deg2rad(lat), indexing="ij")  # (lon, lat)
    omega = np.array([0.7, -0.4, 0.2])  # rotation axis; wind = omega x r
    r = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    wind = np.cross(omega, r, axis=0)
    east = np.stack([-np.sin(lam), np.cos(lam), 0 * lam])
    north = np.stack([-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)])
    u, v = (wind * east).sum(0), (wind * north).sum(0)
    spoiled_u, spoiled_v = u.copy(), v.copy()
    spoiled_u[:, [0, -1]] = np.inf
    spoiled_v[:, [0, -1]] = np.nan
    filled_u, filled_v = wb2.pole_winds(jnp.asarray(spoiled_u), jnp.asarray(spoiled_v), lat, lon)
    # the ring's mean vector is cos(1.5 deg) x the pole's: second order in the spacing
    np.testing.assert_allclose(np.asarray(filled_u)[:, [0, -1]], u[:, [0, -1]], atol=1e-3 * np.abs(omega).max())
    np.testing.assert_allclose(np.asarray(filled_v)[:, [0, -1]], v[:, [0, -1]], atol=1e-3 * np.abs(omega).max())
    np.testing.assert_allclose(np.asarray(filled_u)[:, 1:-1], u[:, 1:-1], rtol=1e-6, atol=1e-7)  # untouched (float32)
