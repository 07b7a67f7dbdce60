"""Work that the tests run in a child process on a forced number of host devices.

The device count (`XLA_FLAGS=--xla_force_host_platform_device_count=N`) must be set before jax is
imported, so the parent sets it in the child's environment (`helpers.run_on_devices`) and this module
only checks it. The last line of stdout is a JSON object.

    python tests/on_devices.py hindcast RUN STORE OUT MEMBER_CHUNK
    python tests/on_devices.py train CONFIG STORE WORKDIR [MEMBER_SHARDS [LAT_SHARDS]]
    python tests/on_devices.py sample_step CONFIG MEMBERS MEMBER_SHARDS LAT_SHARDS
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from weatherens import config, grid, sharding
from weatherens.infer import forecast
from weatherens.model.predictor import Predictor
from weatherens.train import loop
from weatherens.train import step as train_step_lib


def hindcast(run: str, store: str, out: str, member_chunk: int) -> dict:
    """10 members, 12 h from 2000-01-12T00, Gaussian-perturbed initial conditions, written to `out`."""
    forecast.forecast([run], store, forecast.parse_init_times(["2000-01-12T00"]), 10, 12, out,
                      perturbation="gaussian", member_chunk=member_chunk, progress=False)
    return {"devices": jax.local_device_count()}


def train_two_steps(config_path: str, store: str, workdir: str, member_shards: int = 1, lat_shards: int = 1) -> dict:
    """Two optimizer steps of batch 8 (a checkpoint at step 2, no validation); the final loss."""
    exp = config.load(config_path, ["train.steps=2", "train.validate_every=0", "data.batch_size=8",
                                    "train.checkpoint_every=2", f"train.member_shards={member_shards}",
                                    f"train.lat_shards={lat_shards}"])
    summary = loop.train(exp, store, workdir, progress=False)
    return {"devices": jax.device_count(), "loss": summary["loss"]}


def sample_step(config_path: str, members: int, member_shards: int, lat_shards: int) -> dict:
    """One training step of one sample whose `members` are split over `member_shards` devices and
    its latitudes over `lat_shards` (the mesh of all devices), on the config's model at 64 x 32
    with fixed inputs: its loss, gradient norm, and the compiled step's temporary memory per device
    (XLA's buffer assignment)."""
    exp = config.load(config_path, [f"train.members={members}", f"train.member_shards={member_shards}",
                                    f"train.lat_shards={lat_shards}"])
    channels = [f"{v}@{lv}" for v in ("geopotential", "temperature") for lv in exp.data.levels] + ["2m_temperature"]
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(64)
    c, f = len(channels), len(exp.data.forcings)
    predictor = Predictor(exp.model, channels, exp.data.forcings, lat, lon, np.zeros(c), np.ones(c), np.full(c, 0.1),
                          np.zeros((0, 32, 64)))
    mesh = sharding.data_mesh(member_shards, lat_shards)
    cfg = dataclasses.replace(exp.train, rollout_lengths=(2,), rollout_starts=(0,), ema_decay=0.0)
    optimizer = train_step_lib.make_optimizer(cfg)
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.standard_normal((1, 2, c, 32, 64)), "forcings": rng.random((1, 4, f, 32, 64)),
             "targets": rng.standard_normal((1, 2, c, 32, 64))}
    batch = sharding.global_batch({k: v.astype(np.float32) for k, v in batch.items()}, sharding.batch_sharding(mesh))
    state = jax.device_put(train_step_lib.init_state(predictor, optimizer, 0), sharding.replicated(mesh))
    state = state._replace(params=jax.tree.map(lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                                               state.params))  # a network whose output depends on its inputs
    step = jax.jit(train_step_lib.make_train_step(train_step_lib.Objective(predictor, cfg, mesh), optimizer, 0))
    compiled = step.lower(state, batch).compile()
    _, metrics = compiled(state, batch)
    return {"devices": jax.device_count(), "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
            "flops": float(compiled.cost_analysis()["flops"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    h = sub.add_parser("hindcast")
    for name in ("run", "store", "out"):
        h.add_argument(name)
    h.add_argument("member_chunk", type=int)
    t = sub.add_parser("train")
    for name in ("config_path", "store", "workdir"):
        t.add_argument(name)
    t.add_argument("member_shards", type=int, nargs="?", default=1)
    t.add_argument("lat_shards", type=int, nargs="?", default=1)
    m = sub.add_parser("sample_step")
    m.add_argument("config_path")
    for name in ("members", "member_shards", "lat_shards"):
        m.add_argument(name, type=int)
    args = vars(parser.parse_args())
    what = args.pop("what")
    run = {"hindcast": hindcast, "train": train_two_steps, "sample_step": sample_step}[what]
    print(json.dumps(run(**args)))


if __name__ == "__main__":
    main()
