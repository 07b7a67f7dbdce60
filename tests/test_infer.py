"""Ensemble inference: member invariance to devices and chunks, streaming, resume after a kill, baselines."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray as xr
import zarr

from helpers import run_on_devices, wave_dataset, write_zarr
from weatherens import checkpoint, config
from weatherens.config import TimeRange
from weatherens.infer import baselines, ensemble, forecast
from weatherens.train import loop
from weatherens.verify import evaluation
from weatherens.verify import io as verify_io

pytestmark = pytest.mark.slow  # trains a model for its forecasts; child processes

ROOT = Path(__file__).resolve().parents[1]
INITS = forecast.parse_init_times(["2000-01-12T00/2000-01-12T12/12h"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps on the toy atmosphere (its noise-conditioned norms are live)."""
    root = tmp_path_factory.mktemp("infer")
    store = write_zarr(wave_dataset(), root / "waves.zarr")
    exp = config.load(ROOT / "configs" / "tiny.yaml", ["train.steps=3", "train.validate_every=0",
                                                       "train.learning_rate=1e-2", "train.warmup_steps=0"])
    loop.train(exp, str(store), root / "run", progress=False)
    return store, root / "run", root


def test_members_differ_and_runs_are_reproducible(trained, tmp_path):
    store, run, _ = trained
    a = forecast.forecast([run], str(store), INITS, 4, 24, tmp_path / "a.zarr", progress=False)
    b = forecast.forecast([run], str(store), INITS, 4, 24, tmp_path / "b.zarr", member_chunk=2, lead_chunk=1,
                          progress=False)
    fa, fb = xr.open_zarr(a, consolidated=True), xr.open_zarr(b)  # finished stores carry consolidated metadata
    assert fa["geopotential"].dims == ("time", "prediction_timedelta", "number", "level", "latitude", "longitude")
    assert fa["2m_temperature"].attrs["units"] == "K" and fa.attrs["perturbation"] == "none"
    np.testing.assert_array_equal(fa["prediction_timedelta"].values, np.arange(1, 5) * np.timedelta64(6, "h"))
    z = fa["geopotential"].values
    assert np.isfinite(z).all()
    assert float(np.abs(z[:, :, 0] - z[:, :, 1]).max()) > 0  # the noise makes members differ
    np.testing.assert_allclose(fb["geopotential"].values, z, rtol=1e-5, atol=1e-2)  # chunks of 2 members, 1 lead
    assert list(fa["member_source"].values) == [str(run)] * 4
    # a two-checkpoint ensemble splits the members in blocks and member j keeps its noise
    run2 = tmp_path / "run2"
    shutil.copytree(run, run2)
    c = xr.open_zarr(forecast.forecast([run, run2], str(store), INITS, 4, 24, tmp_path / "c.zarr", progress=False))
    assert list(c["member_source"].values) == [str(run)] * 2 + [str(run2)] * 2
    np.testing.assert_allclose(c["geopotential"].values, z, rtol=1e-5, atol=1e-2)


def test_member_keys_depend_on_seed_time_and_index_only():
    root = ensemble.init_key(3, np.datetime64("2000-01-12T00"))
    whole = jax.random.key_data(ensemble.member_keys(root, np.arange(10)))
    part = jax.random.key_data(ensemble.member_keys(root, np.arange(6, 10)))
    np.testing.assert_array_equal(whole[6:], part)
    other = jax.random.key_data(ensemble.member_keys(ensemble.init_key(3, np.datetime64("2000-01-12T06")), [6]))
    assert not np.array_equal(other[0], whole[6])


def test_member_j_is_the_same_on_1_or_8_devices_and_in_any_chunks(trained, tmp_path):
    store, run, _ = trained
    outs = {}
    for devices, chunk in ((1, 400), (8, 4)):
        path = tmp_path / f"d{devices}.zarr"
        assert run_on_devices(devices, "hindcast", run, store, path, chunk) == {"devices": devices}
        outs[devices] = xr.open_zarr(path)["temperature"].values
    np.testing.assert_allclose(outs[8], outs[1], rtol=1e-5, atol=1e-3)
    assert float(np.abs(outs[1][0, 0, 3] - outs[1][0, 0, 4]).max()) > 0


def test_rollout_streams_lead_chunks_that_join_to_the_whole(trained):
    store, run, _ = trained
    predictor, params, _ = checkpoint.load_for_inference(run)
    runner = ensemble.EnsembleRunner(predictor, params, lead_chunk=3)
    ds = xr.open_zarr(store)
    x = np.stack([np.concatenate([ds[v].values[i].reshape(-1, 32, 64) for v in ("geopotential", "temperature",
                                                                                "2m_temperature")]) for i in (40, 41)])
    f = np.zeros((9, 2, 32, 64), np.float32)
    keys = ensemble.member_keys(ensemble.init_key(0, np.datetime64("2000-01-11T06")), np.arange(3))
    chunks = list(runner.rollout(x[0], x[1], f, keys, 7))
    assert [(s, c.shape[0]) for s, c in chunks] == [(0, 3), (3, 3), (6, 1)]  # never more than lead_chunk on the host
    whole = list(ensemble.EnsembleRunner(predictor, params, lead_chunk=7).rollout(x[0], x[1], f, keys, 7))
    np.testing.assert_allclose(np.concatenate([c for _, c in chunks]), whole[0][1], rtol=1e-5, atol=1e-2)


def test_killed_hindcast_resumes_and_partial_is_never_the_output(trained, tmp_path):
    store, run, _ = trained
    inits = ["2000-01-11T00/2000-01-13T00/6h"]
    args = [sys.executable, "-m", "weatherens.cli", "forecast", "--checkpoint", str(run), "--data", str(store),
            "--members", "3", "--lead-hours", "24", "--quiet", "--init-times", *inits]
    whole = subprocess.run(args + ["--out", str(tmp_path / "whole.zarr")], cwd=ROOT, capture_output=True, timeout=300)
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]
    out = tmp_path / "killed.zarr"
    proc = subprocess.Popen(args + ["--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "killed.zarr.partial"
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None and time.time() < deadline, "finished before it could be killed"
        try:
            if zarr.open_group(str(partial), mode="r")["init_complete"][:].sum() >= 2:
                break
        except Exception:
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and partial.exists()  # never mistaken for a whole forecast
    resumed = subprocess.run(args + ["--out", str(out)], cwd=ROOT, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    a, b = xr.open_zarr(tmp_path / "whole.zarr"), xr.open_zarr(out)
    assert int(b["init_complete"].sum()) == b.sizes["time"] == 9
    np.testing.assert_array_equal(a["temperature"].values, b["temperature"].values)
    again = subprocess.run(args + ["--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already there" in again.stderr


def test_persistence_and_climatology_baselines(trained, tmp_path):
    store, _, _ = trained
    truth = xr.open_zarr(store)
    kw = dict(variables=("geopotential", "temperature", "2m_temperature"), levels=(500, 850), progress=False)
    p = xr.open_zarr(baselines.persistence(str(store), INITS, 18, tmp_path / "p.zarr", **kw))
    assert p.sizes["number"] == 1
    for i, t0 in enumerate(INITS):
        np.testing.assert_array_equal(p["temperature"].values[i, 2, 0], truth["temperature"].sel(time=t0).values)
    train = TimeRange("2000-01-01", "2000-01-10T18")
    c = xr.open_zarr(baselines.climatology(str(store), INITS, 5, 18, tmp_path / "c.zarr", train=train, seed=1, **kw))
    tt = truth["2m_temperature"].sel(time=train.as_slice())
    for i, t0 in enumerate(INITS):
        for j in range(5):
            member = c["2m_temperature"].values[i, :, j]  # (lead, lat, lon): a training trajectory
            match = [k for k in range(tt.sizes["time"]) if np.array_equal(tt.values[k], member[0])]
            assert len(match) == 1
            tau = tt["time"].values[match[0]]
            assert (tau - t0) % np.timedelta64(1, "D") == np.timedelta64(6, "h")  # lead 1 at t0's time of day + 6 h
            np.testing.assert_array_equal(member[1], truth["2m_temperature"].sel(time=tau + np.timedelta64(6, "h")).values)
    again = xr.open_zarr(baselines.climatology(str(store), INITS, 5, 18, tmp_path / "c2.zarr", train=train, seed=1, **kw))
    np.testing.assert_array_equal(again["2m_temperature"].values, c["2m_temperature"].values)


def test_verify_scores_our_forecast(trained, tmp_path):
    store, run, _ = trained
    path = forecast.forecast([run], str(store), INITS, 4, 12, tmp_path / "f.zarr", perturbation="bred", progress=False)
    scores = evaluation.evaluate(verify_io.open_forecast(path), verify_io.open_truth(store), progress=False,
                                 metrics=[m for m in evaluation.METRIC_PARTS if m != "spectra"])
    assert json.loads(scores.attrs["missing"]) == {}
    assert np.isfinite(scores["temperature"].sel(metric="crps_fair").values).all()
    members = xr.open_zarr(path)["temperature"].values
    assert np.all(np.abs(members[:, 0, 0] + members[:, 0, 1] - 2 * members[:, 0].mean(1)).max() < 1e3)
