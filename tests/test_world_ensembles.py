"""Physics ensembles (weatherens.world.ensembles) on a tiny world: T21, 8 layers, a state a day.

The world steps an hour at a time (stable at T21; half the cost of configs/quick.yaml's 30 min),
spins up 70 days (baroclinic eddies grow from about day 50) and archives 6. The forecasts are
one to four days long and every ensemble runs in member chunks of 2 and lead chunks of 4, so one
compiled trajectory serves them all.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
import xarray as xr

from weatherens import grid
from weatherens.config import TimeRange, WorldConfig
from weatherens.infer import ensemble, output
from weatherens.world import ensembles as pe
from weatherens.world import model as world
from weatherens.world import model_error
from weatherens.world import store as world_store

pytestmark = pytest.mark.slow  # builds a world and runs physics ensembles

CFG = WorldConfig(years=6 / 365, seed=11, resolution="T21", layers=8, timestep_minutes=60.0, spinup_days=70.0,
                  start="2001-03-01", state_every_days=1.0)
INIT = np.datetime64("2001-03-02T00", "ns")  # the second saved state
LEAD_HOURS = 48  # the exact and archived-fields ensembles
LONG_HOURS = 96  # the perturbed perfect-model ensemble, long enough for its spread to grow
LEADS = np.arange(1, LEAD_HOURS // 6 + 1) * np.timedelta64(6, "h")
VARIABLES = tuple(world.VARIABLE_ATTRS)
CHUNK = 2  # members per vmap in every ensemble here


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return world_store.build_world(tmp_path_factory.mktemp("world") / "truth.zarr", CFG, progress=False)


@pytest.fixture(scope="module")
def truth(store):
    """The truth at the valid times of the first LEAD_HOURS, (lead, [level,] lat, lon) per variable."""
    return xr.open_zarr(store).sel(time=INIT + LEADS).load()


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("forecasts")


def _open(path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False).load()


@pytest.fixture(scope="module")
def exact(store, outdir):
    return _open(pe.perfect_model_ensemble(store, [str(INIT)], 2, LEAD_HOURS, outdir / "exact.zarr",
                                           amplitude_k=0.0, member_chunk=CHUNK, progress=False))


@pytest.fixture(scope="module")
def perfect(store, outdir):
    return _open(pe.perfect_model_ensemble(store, [INIT], 4, LONG_HOURS, outdir / "perfect.zarr", amplitude_k=0.1,
                                           seed=7, member_chunk=CHUNK, progress=False))


ERRORS = TimeRange("2001-03-03", "2001-03-07")  # the analysis-error sample: saved states after INIT


@pytest.fixture(scope="module")
def archived(store, outdir):
    return _open(pe.archived_fields_ensemble(store, [INIT], 2, LEAD_HOURS, outdir / "archived.zarr", resolution="T21",
                                             error_span=ERRORS, seed=7, member_chunk=CHUNK, progress=False))


def _rmse(fc: xr.Dataset, truth: xr.Dataset, variable: str) -> np.ndarray:
    """(lead,) area-weighted RMSE over members, levels and grid."""
    w = xr.DataArray(grid.latitude_weights(fc.latitude.values), dims="latitude")
    err2 = (fc[variable].isel(time=0) - truth[variable].values[:, None]) ** 2
    dims = [d for d in err2.dims if d != "prediction_timedelta"]
    return np.sqrt(err2.weighted(w).mean(dims).values)


def test_schema_and_provenance(exact, archived, store):
    for ds, kind in ((exact, "perfect_model"), (archived, "archived_fields")):
        assert dict(ds.sizes) == {"time": 1, "prediction_timedelta": len(LEADS), "number": 2, "level": 4,
                                  "latitude": 32, "longitude": 64}
        np.testing.assert_array_equal(ds.time.values, [INIT])
        np.testing.assert_array_equal(ds.prediction_timedelta.values, LEADS.astype("timedelta64[ns]"))
        np.testing.assert_array_equal(ds.latitude.values, grid.equiangular_latitudes(32))
        np.testing.assert_array_equal(ds.longitude.values, grid.longitudes(64))
        assert list(ds.level.values) == [250, 500, 700, 850]
        assert set(ds.data_vars) == {*VARIABLES, "init_complete"} and ds.init_complete.values.tolist() == [1]
        for v in VARIABLES:
            dims = ("level",) if v in world.LEVEL_VARIABLES else ()
            assert ds[v].dims == ("time", "prediction_timedelta", "number", *dims, "latitude", "longitude"), v
            assert ds[v].dtype == np.float32 and np.isfinite(ds[v].values).all(), v
            assert ds[v].attrs["units"] == world.VARIABLE_ATTRS[v]["units"], v
        assert ds.attrs["kind"] == kind and ds.attrs["world"] == str(store)
        assert ds.attrs["resolution"] == "T21" and ds.attrs["layers"] == "8" and "Held" in ds.attrs["references"]
        assert len(set(ds.member_source.values)) == 1
    assert "white-noise temperature" in str(exact.member_perturbation.values[0])
    assert str(archived.member_perturbation.values[0]) == "analysis error x 1"
    assert archived.attrs["error_sample"] == "4 saved states in 2001-03-03..2001-03-07"  # 03-03 .. 03-06
    assert exact.attrs["amplitude_k"] == "0.0" and archived.attrs["seed"] == "7"
    assert pe.channels_of(CFG)[:2] == ("geopotential@250", "geopotential@500")


def _scale(ds: xr.Dataset, variable: str) -> float:
    """The largest magnitude of a variable (of the wind, for either component)."""
    if variable.endswith("_component_of_wind"):
        return max(float(np.abs(ds[v]).max()) for v in ("u_component_of_wind", "v_component_of_wind"))
    return float(np.abs(ds[variable]).max())


def test_unperturbed_perfect_model_members_are_the_truth(exact, truth, perfect):
    """Amplitude 0: at every lead every member is the truth archive at init + lead, to the float32
    round-off of 48 time steps computed in a vmap rather than alone (measured: a few 1e-6 of the
    largest magnitude; allowed: 2e-5), far below what a 0.1 K perturbation makes of them."""
    for v in VARIABLES:
        got, want = exact[v].isel(time=0).values, truth[v].values[:, None]
        tol = 2e-5 * _scale(truth, v)
        np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=0, atol=tol, err_msg=v)
        perturbed = perfect[v].isel(time=0, prediction_timedelta=slice(0, len(LEADS))).values
        assert np.abs(perturbed - want).max() > 5 * tol, v


def test_perturbed_members_differ_and_spread_grows(perfect, exact):
    u = perfect.u_component_of_wind.isel(time=0)
    spread = u.std("number").mean(("level", "latitude", "longitude")).values  # (lead,) m/s
    assert spread[0] > 1e-3  # far above the unperturbed members' round-off differences:
    assert float(np.abs(exact.u_component_of_wind.diff("number")).max()) < 1e-3
    assert spread[-1] > 1.5 * spread[0] and (np.diff(spread[1:]) > 0).all(), spread  # a dip at first:
    # the white noise projects onto decaying modes too; the growing ones take over within 12 h
    for v in VARIABLES:  # every member differs from every other at every lead
        x = perfect[v].isel(time=0).values
        assert all(not np.array_equal(x[:, i], x[:, j]) for i in range(4) for j in range(i)), v


def test_archived_fields_ensemble_is_worse_than_perfect_model(archived, perfect, truth):
    """Imperfect initial conditions cost skill: at 6 h the errors are much larger than (a)'s."""
    for v in ("geopotential", "temperature", "u_component_of_wind", "surface_pressure"):
        a, b = _rmse(perfect.isel(prediction_timedelta=slice(0, len(LEADS))), truth, v), _rmse(archived, truth, v)
        assert b[0] > 3 * a[0], (v, a[0], b[0])


def test_same_seed_same_members(store, outdir, archived):
    """Member j is bitwise the same in a second run, and its perturbation the same in any member chunk."""
    again = _open(pe.archived_fields_ensemble(store, [INIT], 2, 24, outdir / "archived2.zarr", resolution="T21",
                                              error_span=ERRORS, seed=7, member_chunk=CHUNK, progress=False))
    for v in VARIABLES:
        np.testing.assert_array_equal(again[v].values, archived[v].isel(prediction_timedelta=slice(0, 4)).values, v)
    model = world.truth_model(CFG)
    times, states = world.load_truth_states(store)
    state = jax.tree.map(lambda x: x[list(times).index(INIT)], states)
    first = pe.member_states(model, state, 7, INIT, [0, 1], 0.1).temperature_variation
    second = pe.member_states(model, state, 7, INIT, [1, 2], 0.1).temperature_variation
    np.testing.assert_array_equal(np.asarray(first[1]), np.asarray(second[0]))  # member 1, in either place
    assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))
    later = pe.member_states(model, state, 7, INIT + np.timedelta64(6, "h"), [0, 1], 0.1).temperature_variation
    assert not np.array_equal(np.asarray(first[0]), np.asarray(later[0]))  # the init time is in the key


def test_init_without_saved_state_is_a_clear_error(store, tmp_path):
    with pytest.raises(ValueError) as err:
        pe.perfect_model_ensemble(store, ["2001-03-02T06"], 2, 24, tmp_path / "x.zarr", progress=False)
    message = str(err.value)
    assert str(store) in message and "2001-03-02T06" in message
    assert "2001-03-01T00, 2001-03-02T00, 2001-03-03T00, 2001-03-04T00" in message
    with pytest.raises(ValueError, match="no archived fields at 2001-04-01T00"):
        pe.archived_fields_ensemble(store, ["2001-04-01"], 2, 24, tmp_path / "x.zarr", progress=False)
    with pytest.raises(ValueError, match="0 saved physics state.* in 2000-01-01..2000-04-30T18"):
        pe.predictability_limit_ensemble(store, [INIT], 2, 24, tmp_path / "x.zarr", progress=False)
    with pytest.raises(ValueError, match="perturbation_scale"):
        pe.archived_fields_ensemble(store, [INIT], 2, 24, tmp_path / "x.zarr", perturbation_scale=-1.0, progress=False)
    with pytest.raises(ValueError, match="amplitude_k"):
        pe.perfect_model_ensemble(store, [INIT], 2, 24, tmp_path / "x.zarr", amplitude_k=-1.0, progress=False)
    with pytest.raises(ValueError, match="multiple of"):
        pe.perfect_model_ensemble(store, [INIT], 2, 9, tmp_path / "x.zarr", progress=False)
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "x.zarr.partial").exists()


def test_resume_skips_completed_inits(store, tmp_path, monkeypatch, exact):
    """A run killed after its first init goes on with the second only, and writes the same numbers."""
    inits = [INIT, INIT + np.timedelta64(1, "D")]
    out = tmp_path / "resumed.zarr"
    real_mark = output.ForecastWriter.mark_complete

    def killed(self, i):
        if i == 1:
            raise KeyboardInterrupt
        real_mark(self, i)

    monkeypatch.setattr(output.ForecastWriter, "mark_complete", killed)
    with pytest.raises(KeyboardInterrupt):
        pe.perfect_model_ensemble(store, inits, 2, 24, out, amplitude_k=0.0, member_chunk=CHUNK, progress=False)
    monkeypatch.setattr(output.ForecastWriter, "mark_complete", real_mark)
    started = []
    real_key = ensemble.init_key
    monkeypatch.setattr(ensemble, "init_key", lambda seed, t: started.append(t) or real_key(seed, t))
    ds = _open(pe.perfect_model_ensemble(store, inits, 2, 24, out, amplitude_k=0.0, member_chunk=CHUNK, progress=False))
    assert started == [inits[1]]
    for v in VARIABLES:
        first_day = exact[v].isel(time=0, prediction_timedelta=slice(0, 4)).values
        np.testing.assert_array_equal(ds[v].isel(time=0).values, first_day, err_msg=v)
        assert np.isfinite(ds[v].values).all()


T15 = dict(resolution="T15", timestep_minutes=120.0, error_span=ERRORS, seed=3, member_chunk=CHUNK, progress=False)


@pytest.fixture(scope="module")
def t15(store, outdir):
    """A T15 analogue of the T21 world with a 2-hour step (seed 3, no model error), shared by the tests below."""
    return _open(pe.archived_fields_ensemble(store, [INIT], CHUNK, LEAD_HOURS, outdir / "t15.zarr", **T15))


@pytest.fixture(scope="module")
def coarse():
    """A T15, 2-hour-step copy of the world's model, and its one-interval model errors."""
    return world.truth_model(dataclasses.replace(CFG, resolution="T15", timestep_minutes=120.0))


@pytest.fixture(scope="module")
def coarse_errors(store, coarse):
    return model_error.model_errors(store, CFG, ERRORS, coarse)


def test_limit_beats_the_operational_analogue(store, outdir, truth, t15):
    """Same analysis, same perturbation draws: the world's own model (T21 here) forecasts better than
    the cheaper one (T15, 2-hour step) from 12 h on, in fair CRPS of every scorecard channel (seeded; the model
    error of T15 dominates after a few steps)."""
    from weatherens.verify import metrics, regions

    kw = dict(error_span=ERRORS, seed=3, member_chunk=CHUNK, progress=False)
    limit = _open(pe.predictability_limit_ensemble(store, [INIT], CHUNK, LEAD_HOURS, outdir / "limit.zarr", **kw))
    analogue = t15
    assert limit.attrs["kind"] == "predictability_limit" and analogue.attrs["resolution"] == "T15"
    w = grid.latitude_weights(truth.latitude.values)
    for v, level in (("geopotential", 500), ("temperature", 850), ("2m_temperature", None)):
        crps = {}
        for name, ds in (("limit", limit), ("analogue", analogue)):
            f, y = ds[v].isel(time=0, drop=True), truth[v]
            if level is not None:
                f, y = f.sel(level=level), y.sel(level=level)
            score = metrics.crps_fair(f.rename(prediction_timedelta="time").assign_coords(time=y.time), y)
            crps[name] = regions.spatial_mean(score, w).values  # (lead,)
        assert (crps["limit"][1:] < crps["analogue"][1:]).all(), (v, crps)


def test_model_error_sample_is_zero_for_the_worlds_own_model_only(store, coarse, coarse_errors):
    """e_k = T(M_truth(s_k)) - M_cheap(T(s_k)): exactly zero when the cheaper model is the world's own,
    non-zero for a coarser, longer-stepping one, with the mean removed from its anomalies."""
    own = model_error.model_errors(store, CFG, ERRORS, world.truth_model(CFG))
    assert own.size == 4  # the saved states of 2001-03-03 .. 03-06 (the span ends at 03-07T00)
    for f in world.STATE_FIELDS:
        assert not np.asarray(getattr(own.anomalies, f)).any(), f
    t = np.asarray(coarse_errors.anomalies.temperature_variation, np.float64)  # (K, layers, m, l) on T15
    assert t.shape[0] == 4 and t.shape[-2:] == coarse.coords.horizontal.modal_shape
    assert np.abs(t).max() > 0
    np.testing.assert_allclose(t.mean(0), 0.0, atol=1e-6 * np.abs(t).max())


def test_model_error_draws_are_zero_at_the_first_interval_and_chunking_free(coarse_errors):
    sample = coarse_errors
    key = jax.random.key(4)
    whole = model_error.noise(sample, key, np.arange(3), np.arange(4), 1.0).vorticity  # (M, F, layers, m, l)
    assert whole.shape[:2] == (3, 4)
    assert not np.asarray(whole[:, 0]).any()
    assert (np.abs(np.asarray(whole[:, 1:])).sum(axis=(-1, -2, -3)) > 0).all()
    part = model_error.noise(sample, key, [2], [3], 1.0).vorticity
    np.testing.assert_array_equal(np.asarray(part[0, 0]), np.asarray(whole[2, 3]))
    assert not np.array_equal(np.asarray(whole[0, 1]), np.asarray(whole[0, 2]))


def test_analogue_with_model_error_spreads_more_and_zero_noise_changes_nothing(store, outdir, t15, coarse):
    """Same seed, same initial draws: a T15 analogue with its own model errors added every 6 h has
    more spread at 48 h in every scorecard channel than without; and the noisy trajectory with zero
    noise gives the noise-free trajectory (same steps: equal to float32 rounding)."""
    plain = t15
    noisy = _open(pe.archived_fields_ensemble(store, [INIT], CHUNK, LEAD_HOURS, outdir / "t15-noisy.zarr",
                                              model_error_scale=1.0, **T15))
    assert "model error x 1" in noisy.attrs["perturbation"] and float(noisy.attrs["model_error_scale"]) == 1.0
    w = grid.latitude_weights(plain.latitude.values)[:, None]
    for v, level in (("geopotential", 500), ("temperature", 850), ("2m_temperature", None)):
        spread = {}
        for name, ds in (("plain", plain), ("noisy", noisy)):
            x = ds[v].isel(time=0, prediction_timedelta=-1)
            x = x.sel(level=level) if level is not None else x
            spread[name] = float((x.std("number").values * w).mean())
        assert spread["noisy"] > 1.1 * spread["plain"], (v, spread)
    np.testing.assert_allclose(noisy["2m_temperature"].isel(prediction_timedelta=0).values,
                               plain["2m_temperature"].isel(prediction_timedelta=0).values, rtol=1e-5)

    state = jax.tree.map(lambda x: x[None], world.interpolate_state(
        jax.tree.map(lambda x: x[1], world.load_truth_states(store)[1]), world.truth_model(CFG), coarse))
    zero = jax.tree.map(lambda x: np.zeros((1, 4) + x.shape[1:], x.dtype), state)
    _, want = pe._trajectory_fn(coarse, 4)(state)
    _, got = model_error.trajectory_fn(coarse, 4)(state, zero)
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-5, atol=1e-4, err_msg=k)
