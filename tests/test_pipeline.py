"""The training sampler: right windows, reproducible order, exact sharding, both read paths."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from helpers import canonical_dataset, write_zarr
from weatherens import data
from weatherens.config import DataConfig, TimeRange
from weatherens.data.pipeline import Sampler

VARS = ("temperature", "2m_temperature", "geopotential")


def make_cfg(**kw) -> DataConfig:
    base = dict(variables=VARS, levels=(500, 850), batch_size=4, rollout_steps=2, seed=3, prefetch=2)
    return DataConfig(**{**base, **kw})


@pytest.fixture
def store(tmp_path):
    return write_zarr(canonical_dataset(ntime=40), tmp_path / "s.zarr")


def sampler(store, cfg, **kw) -> Sampler:
    ds = data.open(store, cfg.variables, cfg.levels)
    return Sampler(ds, cfg, **kw)


def test_channel_order_follows_config(store):
    s = sampler(store, make_cfg())
    assert s.channels == (
        "temperature@500", "temperature@850", "2m_temperature", "geopotential@500", "geopotential@850",
    )


def test_windows_hold_the_right_times_and_fields(store):
    cfg = make_cfg()
    s = sampler(store, cfg)
    truth = canonical_dataset(ntime=40)
    b = s.batch(0)
    assert b.inputs.shape == (4, 2, 5, 32, 64) and b.inputs.dtype == np.float32
    assert b.targets.shape == (4, 2, 5, 32, 64)
    assert b.forcings.shape == (4, 4, 0, 32, 64)
    for n, t0 in enumerate(b.times):
        i = int(np.flatnonzero(truth["time"].values == t0)[0])
        for w, j in enumerate([i - 1, i, i + 1, i + 2]):
            state = b.inputs[n, w] if w < 2 else b.targets[n, w - 2]
            np.testing.assert_array_equal(state[1], truth["temperature"].values[j, 1])
            np.testing.assert_array_equal(state[2], truth["2m_temperature"].values[j])
            np.testing.assert_array_equal(state[4], truth["geopotential"].values[j, 1])


def test_an_epoch_visits_every_window_once_and_the_order_is_seeded(store):
    cfg = make_cfg(batch_size=2)
    s = sampler(store, cfg)
    assert len(s.anchors) == 40 - 3  # t - dt and t + 2 dt must exist
    seen = np.concatenate([s.sample_indices(step) for step in range(len(s))])
    assert len(np.unique(seen)) == len(seen) == len(s) * 2
    again = sampler(store, cfg)
    np.testing.assert_array_equal(again.batch(5).inputs, s.batch(5).inputs)
    other = sampler(store, make_cfg(batch_size=2, seed=4))
    assert not np.array_equal(other.sample_indices(0), s.sample_indices(0))
    assert not np.array_equal(s.sample_indices(0), s.sample_indices(len(s)))  # a new epoch, a new order


def test_two_processes_split_exactly_what_one_process_sees(store):
    whole = sampler(store, make_cfg(batch_size=4))
    halves = [sampler(store, make_cfg(batch_size=2), process_index=p, process_count=2) for p in range(2)]
    assert len(whole) == len(halves[0])
    for step in (0, 3, len(whole) + 1):
        joined = np.concatenate([h.batch(step).inputs for h in halves])
        np.testing.assert_array_equal(joined, whole.batch(step).inputs)


def test_ram_and_zarr_paths_give_identical_batches(store):
    cfg = make_cfg()
    ram, disk = sampler(store, cfg, in_memory=True), sampler(store, cfg, in_memory=False)
    for step in (0, 7):
        a, b = ram.batch(step), disk.batch(step)
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.targets, b.targets)
    assert ram.source.in_memory and not disk.source.in_memory


def test_hourly_store_is_sampled_at_the_model_step(tmp_path):
    path = write_zarr(canonical_dataset(ntime=48, step_hours=1), tmp_path / "hourly.zarr")
    s = sampler(path, make_cfg(rollout_steps=1))
    assert s.stride == 6
    b = s.batch(0)
    truth = canonical_dataset(ntime=48, step_hours=1)
    i = int(np.flatnonzero(truth["time"].values == b.times[0])[0])
    np.testing.assert_array_equal(b.inputs[0, 0, 0], truth["temperature"].values[i - 6, 0])
    np.testing.assert_array_equal(b.targets[0, 0, 0], truth["temperature"].values[i + 6, 0])


def test_splits_come_from_config_time_ranges_and_do_not_overlap(store):
    cfg = make_cfg(
        store=str(store),
        batch_size=1,
        train=TimeRange("2000-01-01", "2000-01-05T18"),
        validation=TimeRange("2000-01-06", "2000-01-08T18"),
        test=TimeRange("2000-01-09", "2000-01-10T18"),
    )
    windows = {}
    for split in ("train", "validation", "test"):
        s = Sampler.from_config(cfg, split)
        times = s.times[s.anchors[:, None] + s.offsets[None, :]]
        r = getattr(cfg, split)
        assert times.min() >= np.datetime64(r.start) and times.max() <= np.datetime64(r.end)
        windows[split] = set(times.ravel().tolist())
    assert not windows["train"] & windows["validation"] and not windows["validation"] & windows["test"]
    assert not Sampler.from_config(cfg, "validation").shuffle


@pytest.mark.parametrize("in_memory", [True, False])
def test_nan_in_the_selected_range_is_refused_with_its_place(tmp_path, in_memory):
    ds = canonical_dataset(ntime=40)
    ds["geopotential"][17, 1, 3, 4] = np.nan
    path = write_zarr(ds, tmp_path / "nan.zarr")
    cfg = make_cfg(batch_size=37)  # one batch covers every window
    with pytest.raises(data.DataError, match=r"nan\.zarr: geopotential@850: non-finite values \(NaN/Inf\) at 2000-01-05T06:00:00"):
        sampler(path, cfg, in_memory=in_memory).batch(0)
    clean = data.open(path, VARS, (500, 850), time=slice("2000-01-06", None))
    Sampler(clean, make_cfg(), in_memory=in_memory).batch(0)  # the NaN lies outside the selection


def test_prefetch_iterator_matches_batches_and_stops_cleanly(store):
    s = sampler(store, make_cfg())
    got = list(s.iterate(start_step=2, num_steps=5))
    assert len(got) == 5
    for step, b in zip(range(2, 7), got):
        np.testing.assert_array_equal(b.inputs, s.batch(step).inputs)
    before = threading.active_count()
    for n, _ in enumerate(s.iterate()):  # endless; breaking out must stop the worker
        if n == 3:
            break
    assert threading.active_count() <= before


def test_prefetch_surfaces_errors_from_the_worker(tmp_path):
    ds = canonical_dataset(ntime=40)
    ds["temperature"][:] = np.inf
    path = write_zarr(ds, tmp_path / "inf.zarr")
    s = sampler(path, make_cfg(), in_memory=False)
    with pytest.raises(data.DataError, match="temperature@500: non-finite"):
        next(iter(s.iterate()))


def test_too_few_samples_for_a_batch_is_refused(store):
    with pytest.raises(data.DataError, match=r"s\.zarr: 37 samples .* fewer than one global batch \(20 x 2 processes\)"):
        sampler(store, make_cfg(batch_size=20), process_count=2)


def test_forcings_are_computed_at_every_window_time(store):
    from weatherens.data import forcings

    cfg = make_cfg(forcings=("day_progress_sin", "toa_incident_solar_radiation"))
    s = sampler(store, cfg)
    b = s.batch(1)
    assert b.forcings.shape == (4, 4, 2, 32, 64)
    step = np.timedelta64(6, "h")
    for n, t0 in enumerate(b.times):
        window = t0 + np.arange(-1, 3) * step
        expected = forcings.compute(window, s.lat, s.lon, cfg.forcings)
        np.testing.assert_array_equal(b.forcings[n], expected)


def test_unknown_forcing_is_refused(store):
    with pytest.raises(ValueError, match="unknown forcing.*'moon_phase'"):
        sampler(store, make_cfg(forcings=("moon_phase",)))


def test_static_fields_are_served_once_in_canonical_orientation(tmp_path):
    ds = canonical_dataset(ntime=20)
    lsm = (np.random.default_rng(2).uniform(size=(32, 64)) > 0.5).astype(np.float32)
    ds["land_sea_mask"] = (("latitude", "longitude"), lsm)
    native = ds.isel(latitude=slice(None, None, -1)).rename({"land_sea_mask": "lsm"}).transpose(..., "longitude", "latitude")
    path = write_zarr(native, tmp_path / "static.zarr")
    cfg = make_cfg(store=str(path), static=("lsm",), train=TimeRange("2000-01-01", "2000-01-05"))
    s = Sampler.from_config(cfg, "train")
    assert s.static.shape == (1, 32, 64) and s.static.dtype == np.float32
    np.testing.assert_array_equal(s.static[0], lsm)
    with pytest.raises(data.DataError, match=r"static\.zarr: land_sea_mask has no time axis; list static fields under data\.static"):
        Sampler.from_config(make_cfg(store=str(path), variables=("temperature", "lsm")), "train")
