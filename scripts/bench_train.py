#!/usr/bin/env python3
"""Training throughput of the tiny and small configs, and the share of step time spent waiting for data.

    python scripts/bench_train.py [--configs tiny small] [--steps 30] [--store PATH]

Without --store, builds a synthetic store in the physics world's layout (the configs' variables and
levels on the 64 x 32 grid, 6-hourly, smooth random fields) in a temporary folder. Each config
trains `--steps` optimizer steps with `weatherens.train.loop.train` (no validation, one final
checkpoint) and reports, from the same run:
  first step (compile) [s], step [s], steps/s, samples/s, samples x members x rollout / s,
  data wait share = time blocked on the prefetching sampler / (wait + step time)  (goal < 5 %).
The reference in the same run is the sampler alone: batches/s it serves when nothing else runs,
and its ratio to the steps/s the trainer needs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from weatherens import config, grid
from weatherens.data.pipeline import Sampler
from weatherens.train import loop

ROOT = Path(__file__).resolve().parents[1]


def synthetic_store(exp: config.Experiment, path: Path, days: int = 200) -> Path:
    rng = np.random.default_rng(0)
    ntime = days * 4
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(64)
    time_ = np.datetime64(exp.data.train.start, "ns") + np.arange(ntime) * np.timedelta64(6, "h")
    lam = np.deg2rad(lon)[None, None, :]
    phi = np.deg2rad(lat)[None, :, None]
    t = np.arange(ntime)[:, None, None]
    data = {}
    for i, v in enumerate(exp.data.variables):
        fields = [np.cos(phi) * np.cos((3 + i % 3) * lam - 0.2 * t + k) + 0.05 * rng.standard_normal((ntime, 32, 64))
                  for k in range(len(exp.data.levels))]
        if v in ("surface_pressure", "2m_temperature", "mean_sea_level_pressure"):
            data[v] = (("time", "latitude", "longitude"), (280 + 10 * fields[0]).astype(np.float32), {"units": "K"})
        else:
            arr = np.stack(fields, axis=1) * 10 + 100 * (i + 1)
            data[v] = (("time", "level", "latitude", "longitude"), arr.astype(np.float32), {"units": "1"})
    ds = xr.Dataset(data, coords={"time": time_, "level": np.array(exp.data.levels), "latitude": lat, "longitude": lon})
    ds.chunk({"time": 1}).to_zarr(path, mode="w", consolidated=False, zarr_format=3)
    return path


def sampler_rate(exp: config.Experiment, store: str, batches: int) -> float:
    sampler = Sampler.from_config(exp.data, "train", store=store)
    t0 = time.perf_counter()
    for _ in sampler.iterate(0, batches):
        pass
    return batches / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--store", help="an existing store (default: a synthetic one per config)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            exp = config.load(ROOT / "configs" / f"{name}.yaml",
                              [f"train.steps={args.steps}", "train.validate_every=0", f"train.checkpoint_every={10**9}",
                               f"train.log_every={10**9}", "train.rollout_lengths=[1]", "train.rollout_starts=[0]",
                               "data.train.end=2000-06-30T18"])
            store = args.store or str(synthetic_store(exp, Path(tmp) / f"{name}.zarr"))
            summary = loop.train(exp, store, Path(tmp) / f"run-{name}", progress=True)
            served = sampler_rate(exp, store, max(20, args.steps))
            steps_s = 1.0 / summary["step_s"]
            per = exp.data.batch_size * exp.train.members
            rows.append((name, summary["first_step_s"], summary["step_s"], steps_s, summary["samples_per_s"],
                         summary["samples_per_s"] * exp.train.members, summary["data_wait_share"], served,
                         served / steps_s, per))
    print(f"\n{'config':<7}{'compile s':>10}{'step s':>9}{'steps/s':>9}{'samples/s':>11}{'smp*mem/s':>11}"
          f"{'data wait':>11}{'sampler b/s':>13}{'sampler/need':>14}")
    for r in rows:
        print(f"{r[0]:<7}{r[1]:>10.2f}{r[2]:>9.3f}{r[3]:>9.2f}{r[4]:>11.1f}{r[5]:>11.1f}{100 * r[6]:>10.1f}%"
              f"{r[7]:>13.1f}{r[8]:>13.0f}x")


if __name__ == "__main__":
    main()
