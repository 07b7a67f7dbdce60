"""The physics world: a tiny Held-Suarez run (T21, 8 layers, 5 days spin-up, 2 days archived)."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
import xarray as xr

from weatherens import cli, grid
from weatherens.config import WorldConfig
from weatherens.data import names, world

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


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return world.build_world(tmp_path_factory.mktemp("world") / "truth.zarr", CFG, progress=False)


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
    assert json.loads(ds.attrs[world.CONFIG_ATTR]) == json.loads(world._config_json(CFG))
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
    model = world.truth_model(world.world_config(store))
    assert states.vorticity.shape[1:] == model.coords.modal_shape
    for i in range(len(times)):
        state = jax.tree.map(lambda x, i=i: x[i], states)
        t = 4 * i
        for k, got in model.archive(state).items():
            np.testing.assert_allclose(got, ds[k].isel(time=t), rtol=1e-5, atol=1e-5 * float(abs(ds[k]).max()), err_msg=k)
        stepped = model.archive(model.advance(state))
        for k, got in stepped.items():
            np.testing.assert_allclose(got, ds[k].isel(time=t + 1), rtol=1e-5, atol=1e-5 * float(abs(ds[k]).max()), err_msg=k)


def test_same_seed_is_bitwise_identical_and_stale_partial_is_removed(ds, tmp_path):
    out = tmp_path / "again.zarr"
    stale = out.with_name(out.name + ".partial")
    stale.mkdir()
    (stale / "junk").write_text("left by a killed run")
    world.build_world(out, CFG, progress=False)
    assert not stale.exists()
    again = xr.open_zarr(out).load()
    for name in ds.data_vars:
        np.testing.assert_array_equal(again[name].values, ds[name].values, err_msg=name)
    other = xr.open_zarr(world.build_world(tmp_path / "seed4.zarr", dataclasses.replace(CFG, seed=4), progress=False))
    assert not np.array_equal(other.temperature.values, ds.temperature.values)


def test_existing_world_is_a_cache_and_a_different_config_raises(store):
    files = sorted(p for p in store.rglob("*") if p.is_file())
    before = [p.stat().st_mtime_ns for p in files]
    assert world.build_world(store, CFG, progress=False) == store
    assert [p.stat().st_mtime_ns for p in files] == before
    with pytest.raises(ValueError, match=f"{store}.*seed: store has 3, asked for 4"):
        world.build_world(store, dataclasses.replace(CFG, seed=4), progress=False)


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


def test_bad_config_fails_early(tmp_path):
    with pytest.raises(ValueError, match="resolution"):
        world.truth_grid("42")
    with pytest.raises(ValueError, match="timestep_minutes"):
        world.build_world(tmp_path / "x.zarr", dataclasses.replace(CFG, timestep_minutes=7.0))
    assert not (tmp_path / "x.zarr").exists()
