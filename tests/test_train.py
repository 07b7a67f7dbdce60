"""Training: the loop on a toy atmosphere, exact resume after a kill, NaN stop, checkpoints for inference,
8 devices against 1, and two processes against one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from helpers import run_on_devices, wave_dataset, write_zarr
from weatherens import checkpoint, config, sharding
from weatherens.errors import InputError
from weatherens.train import loop

pytestmark = pytest.mark.slow  # trains, in this process and in child processes

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_zarr(wave_dataset(), tmp_path_factory.mktemp("train") / "waves.zarr")


def tiny(*overrides):
    return config.load(TINY, list(overrides))


def records(workdir, kind="train"):
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def weatherens(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "weatherens.cli", *map(str, args)], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_training_logs_validates_checkpoints_and_loads_for_inference(store, tmp_path):
    exp = tiny("train.steps=12", "train.checkpoint_every=6", "train.validate_every=6", "train.learning_rate=3e-3")
    summary = loop.train(exp, str(store), tmp_path, progress=False)
    assert summary["step"] == 12
    train = records(tmp_path)
    assert [r["step"] for r in train] == list(range(1, 13))
    assert set(train[0]["crps"]) == {"geopotential@500", "geopotential@850", "temperature@500", "temperature@850",
                                     "2m_temperature"}
    assert all(np.isfinite(r["loss"]) for r in train)
    assert np.mean([r["loss"] for r in train[-3:]]) < np.mean([r["loss"] for r in train[:3]])  # it learns
    assert [r["step"] for r in records(tmp_path, "validation")] == [6, 12]
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [6, 12]  # keep_checkpoints: 2
    predictor, params, meta = checkpoint.load_for_inference(tmp_path)
    assert meta["step"] == 12 and meta["channels"] == list(predictor.channels)
    assert meta["config"]["model"]["embed_dim"] == exp.model.embed_dim
    assert meta["provenance"]["store"] == str(store)
    assert predictor.static.shape == (0, 32, 64)
    x = jax.numpy.asarray(wave_dataset()["temperature"].values[:2, 0])  # any (C, lat, lon) input of the right size
    assert x.shape[-2:] == (32, 64)


def test_long_lead_validation_keeps_the_best_average_and_resumes_it(store, tmp_path):
    exp = tiny("train.steps=8", "train.rollout_lengths=[1,3]", "train.rollout_starts=[0,4]",
               "train.phase_learning_rates=[3e-3,1e-3]", "train.phase_warmup_steps=[2,1]", "train.gradient_steps=1",
               "train.ema_decay=0.9", "train.validation_inits=3", "train.validation_lead_hours=[12,24]",
               "train.validate_every=2", "train.checkpoint_every=4", "model.increment_lmax=8", "model.increment_taper=3")
    loop.train(exp, str(store), tmp_path, progress=False)
    scores = {r["step"]: r["score"] for r in records(tmp_path, "long_validation")}
    assert sorted(scores) == [2, 4, 6, 8] and all(np.isfinite(list(scores.values())))
    best = min(scores, key=scores.get)
    _, params, meta = checkpoint.load_for_inference(tmp_path / "best")
    assert meta["step"] == best and meta["validation_score"] == pytest.approx(scores[best]) and meta["ema"]
    predictor, latest_params, _ = checkpoint.load_for_inference(tmp_path)
    online, _, step, ema = checkpoint.restore_training(checkpoint.manager(tmp_path), predictor,
                                                       loop.train_step_lib.make_optimizer(exp.train))
    assert int(step) == 8 and ema is not None
    for a, b, c in zip(jax.tree.leaves(latest_params), jax.tree.leaves(ema), jax.tree.leaves(online)):
        np.testing.assert_array_equal(a, b)  # inference reads the average ...
    assert any(not np.array_equal(b, c) for b, c in zip(jax.tree.leaves(ema), jax.tree.leaves(online)))  # ... not the online weights


def test_init_from_continues_a_checkpoint_with_a_fresh_optimizer_at_its_step(store, tmp_path):
    base = ("train.validate_every=0", "train.rollout_lengths=[1,2]", "train.rollout_starts=[0,4]",
            "train.phase_learning_rates=[3e-3,1e-3]", "train.phase_warmup_steps=[2,0]", "train.ema_decay=0.9")
    loop.train(tiny("train.steps=4", *base), str(store), tmp_path / "pre", progress=False)
    exp = tiny("train.steps=5", *base, f"train.init_from={tmp_path / 'pre'}")
    loop.train(exp, str(store), tmp_path / "fine", progress=False)
    assert [r["step"] for r in records(tmp_path / "fine")] == [5]
    predictor, pre_params, _ = checkpoint.load_for_inference(tmp_path / "pre")  # the average of steps 1-4
    optimizer = loop.train_step_lib.make_optimizer(exp.train)
    online, _, step, ema = checkpoint.restore_training(checkpoint.manager(tmp_path / "fine"), predictor, optimizer)
    assert int(step) == 5 and checkpoint.load_meta(tmp_path / "fine")["provenance"]["init_from"] == str(tmp_path / "pre")
    # By hand: one step of the rollout-2 phase (its rate at step 4, no warm-up) from the average, fresh moments.
    sampler = loop._sampler(exp, str(store), "train", 2)
    b = sampler.batch(4)
    step_fn = jax.jit(loop.train_step_lib.make_train_step(loop.train_step_lib.Objective(predictor, exp.train),
                                                          optimizer, exp.train.seed))
    state = loop.train_step_lib.state_from(pre_params, 4, optimizer, ema=True)
    want, _ = step_fn(state, {"inputs": b.inputs, "forcings": b.forcings, "targets": b.targets})
    for a, w in zip(jax.tree.leaves(online), jax.tree.leaves(want.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(w), rtol=1e-5, atol=1e-7)
    for a, w in zip(jax.tree.leaves(ema), jax.tree.leaves(want.ema)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(w), rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, p) for a, p in zip(jax.tree.leaves(online), jax.tree.leaves(pre_params)))
    schedule = [s for s in jax.tree.leaves(want.opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByScheduleState))
                if isinstance(s, optax.ScaleByScheduleState)]
    assert [int(s.count) for s in schedule] == [5]  # the rate followed the global step (1e-3 at 4), not step 0
    with pytest.raises(InputError, match="model.increment_lmax"):
        loop.train(tiny("train.steps=6", *base, "model.increment_lmax=8", f"train.init_from={tmp_path / 'pre'}"),
                   str(store), tmp_path / "other", progress=False)
    with pytest.raises(InputError, match="not before train.steps"):
        loop.train(tiny("train.steps=4", *base, f"train.init_from={tmp_path / 'pre'}"), str(store), tmp_path / "late",
                   progress=False)


def test_init_from_accepts_a_checkpoint_saved_before_newer_model_fields():
    """checkpoints/small2-notaper was saved before model.remat_blocks existed: its model as loaded (the
    new field at its default) is configs/small2-notaper-long.yaml's, with or without remat, and a
    field that changes the network is still refused."""
    predictor, _, _ = checkpoint.load_for_inference(ROOT / "checkpoints" / "small2-notaper")
    exp = config.load(ROOT / "configs" / "small2-notaper-long.yaml", ["model.remat_blocks=true"])
    assert loop.model_misfit(predictor.cfg, exp.model) is None
    assert loop.model_misfit(predictor.cfg, config.load(ROOT / "configs" / "small2-notaper-long.yaml").model) is None
    wider = config.load(ROOT / "configs" / "small2-notaper-long.yaml", ["model.embed_dim=64"]).model
    assert loop.model_misfit(predictor.cfg, wider) == "model.embed_dim: 48 there, 64 here"


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(store, tmp_path, capsys):
    exp = tiny("train.steps=6", "train.learning_rate=1e30", "train.warmup_steps=0", "train.grad_clip=1e30",
               "train.validate_every=0")
    with pytest.raises(loop.TrainingDiverged, match="last good checkpoint"):
        loop.train(exp, str(store), tmp_path, progress=False)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert steps and steps[-1] < 6
    checkpoint.load_for_inference(tmp_path)  # still a whole checkpoint


def test_killed_run_resumes_with_the_same_loss_curve(store, tmp_path):
    args = ["--config", TINY, "--data", store, "--quiet", "--set", "train.steps=8", "--set", "train.checkpoint_every=4",
            "--set", "train.validate_every=0", "--set", "train.keep_checkpoints=3"]
    whole = weatherens("train", "--workdir", tmp_path / "whole", *args)
    assert whole.wait(timeout=300) == 0, whole.stdout.read().decode()
    killed = weatherens("train", "--workdir", tmp_path / "killed", *args, "--set", "train.checkpoint_every=4")
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "checkpoints" / "4").exists():
        assert killed.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = weatherens("train", "--workdir", tmp_path / "killed", *args)
    out = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, out
    assert "train: resuming from the checkpoint at step 4" in out
    a, b = records(tmp_path / "whole"), records(tmp_path / "killed")
    assert [r["step"] for r in b] == list(range(1, 9))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bitwise: same batches, keys and state


@pytest.mark.parametrize("member_shards, lat_shards", [(1, 1), (2, 2)])
def test_a_step_on_8_devices_equals_the_step_on_1(store, tmp_path, member_shards, lat_shards):
    """8 devices as 8 batch rows, or as 2 rows x 2 member shards x 2 latitude bands (each device one of
    a sample's 2 members on half of its latitudes)."""
    out = {}
    for n in (1, 8):
        out[n] = run_on_devices(n, "train", TINY, store, tmp_path / f"d{n}", *((member_shards, lat_shards) if n > 1 else ()))
        assert out[n]["devices"] == n
    np.testing.assert_allclose(out[8]["loss"], out[1]["loss"], rtol=1e-5)
    one = [r["loss"] for r in records(tmp_path / "d1")]
    eight = [r["loss"] for r in records(tmp_path / "d8")]
    np.testing.assert_allclose(eight, one, rtol=1e-5)
    _, p1, _ = checkpoint.load_for_inference(tmp_path / "d1")
    _, p8, _ = checkpoint.load_for_inference(tmp_path / "d8")
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_a_sample_split_over_devices_gives_the_step_on_one_with_less_memory_each():
    """One sample of 4 members on 1 device, on 2 (train.member_shards 2), on 4 (lat_shards 4: bands
    of 8 of the 32 latitudes) and on 4 (2 x 2): the same loss and gradient, and each device's
    temporaries and its FLOPs shrink with its share of the sample (temporaries 15.1 / 7.6 / 3.5 / 3.6 MB,
    FLOPs 178 M on one device, 71 M per device on 4 bands, when written: the parameter update and
    the spectral mix are not split)."""
    runs = {split: run_on_devices(split[0] * split[1], "sample_step", TINY, 4, *split)
            for split in ((1, 1), (2, 1), (1, 4), (2, 2))}
    for split, run in runs.items():
        assert run["devices"] == split[0] * split[1]
        np.testing.assert_allclose(run["loss"], runs[1, 1]["loss"], rtol=1e-6)
        np.testing.assert_allclose(run["grad_norm"], runs[1, 1]["grad_norm"], rtol=1e-5)
    assert runs[1, 1]["grad_norm"] > 0
    whole = runs[1, 1]["temp_bytes"]
    assert runs[2, 1]["temp_bytes"] < 0.6 * whole
    assert runs[1, 4]["temp_bytes"] < 0.35 * whole
    assert runs[2, 2]["temp_bytes"] < 0.35 * whole
    assert runs[1, 4]["flops"] < 0.5 * runs[1, 1]["flops"]


def test_latitude_bands_must_divide_the_grid():
    sharding.check_lat_shards(121, 11)
    sharding.check_lat_shards(720, 8)
    with pytest.raises(InputError, match=r"train.lat_shards = 4 does not divide the grid's 121 latitudes "
                                         r"\(divisors up to 64: \[11\]\)"):
        sharding.check_lat_shards(121, 4)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(store, tmp_path):
    common = ["--config", TINY, "--data", store, "--quiet", "--set", "train.steps=2", "--set", "train.validate_every=0",
              "--set", "train.checkpoint_every=2"]
    one = weatherens("train", "--workdir", tmp_path / "one", *common, "--set", "data.batch_size=2")
    assert one.wait(timeout=300) == 0, one.stdout.read().decode()
    port = free_port()
    procs = [weatherens("train", "--workdir", tmp_path / "two", *common, "--set", "data.batch_size=1",
                        "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2, "--process-id", i)
             for i in range(2)]
    for p in procs:
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out[-3000:]
    np.testing.assert_allclose([r["loss"] for r in records(tmp_path / "two")],
                               [r["loss"] for r in records(tmp_path / "one")], rtol=1e-5)
