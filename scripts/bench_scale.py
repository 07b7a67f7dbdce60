#!/usr/bin/env python3
"""The whole pipeline at WeatherBench 2's 1.5 deg grid, and the step's cost at 64 x 32, 1.5 and 0.25 deg.

    python scripts/bench_scale.py [--world WORLD.zarr] [--work DIR] [--days 20] [--full]

1. The pipeline at 1.5 deg (240 x 121 with poles, 13 levels), each stage a fresh process timed
   from outside, with its peak resident memory (ru_maxrss):
   world-wb2 (the store, from a physics world: `--world`, else a short one built first),
   inspect, stats, train (configs/base.yaml's network, embed 384 x 8 blocks, with its variables
   restricted to what the dry world holds: no specific humidity; 3 steps, batch 1, 2 members,
   rollout 1; its blocks rematerialised, `model.remat_blocks`, without which the step needs 22 GiB
   by XLA's analysis, and at half the width if even that fails), forecast (2 members, 2 inits,
   1 day) and verify (with spectra).
   Reference in the same run: a raw read of the whole store with zarr (GB/s), for the I/O stages.
2. XLA's cost analysis of the compiled forward step (one member) and training step (batch 1,
   2 members, rollout 1) of the small and base networks at 64 x 32 and 1.5 deg (and 0.25 deg with
   --full): FLOPs, bytes accessed, and the compiled program's argument and temporary memory; the
   training step also with its blocks rematerialised (`model.remat_blocks`; memory only). The
   programs are lowered from abstract shapes (nothing is allocated or run). Reference in the same
   run: the FLOP rate of a float32 matmul on these cores, by which the projected CPU time of a
   step is flops / rate (printed beside the measured step time at 1.5 deg).
   With --full also: a 1-day 0.25 deg WB2 store (its wall time and memory), and one forward step
   of the base network at 0.25 deg run for one member when the analysed memory fits in RAM.

The figures and the projection to GPUs are in docs/scaling.md. Slow: ~15 min without --full here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "base.yaml"
DRY_VARIABLES = ["geopotential", "temperature", "u_component_of_wind", "v_component_of_wind", "2m_temperature",
                 "10m_u_component_of_wind", "10m_v_component_of_wind", "mean_sea_level_pressure"]
_MARK = "__bench_scale__"
# The child's peak: VmHWM of its own address space on Linux. Not ru_maxrss, which Linux keeps across
# exec, so a child started by a parent that already holds 17 GiB reported the parent's 17 GiB.
_RUNNER = (
    "import re, resource, sys\n"
    "from weatherens.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "try:\n"
    "    peak = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
    "except (OSError, AttributeError):\n"
    "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    f"print('{_MARK}', rc, peak, flush=True)\n"
    "sys.exit(rc)\n"
)


def stage(name: str, argv: list[str], log: Path) -> dict:
    """Run `weatherens argv` in a fresh process: wall time (s, from outside) and peak RSS (GiB)."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-c", _RUNNER, *argv], stdout=subprocess.PIPE, stderr=f, text=True,
                              env=os.environ | {"GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")})
    wall = time.perf_counter() - t0
    Path(str(log) + ".out").write_text(done.stdout)
    marks = [line.split() for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode != 0 or not marks:  # e.g. killed for memory (rc -9): no peak to report from inside
        print(f"  {name:<11} FAILED after {wall:.1f} s (rc {done.returncode}); see {log}", flush=True)
        return {"stage": name, "wall_s": wall, "failed": done.returncode}
    peak = int(marks[-1][2]) / 2**20  # KiB
    print(f"  {name:<11} {wall:8.1f} s  {peak:6.2f} GiB", flush=True)
    return {"stage": name, "wall_s": wall, "peak_gib": peak}


def raw_read_rate(store: Path) -> tuple[float, float]:
    """(GB read, GB/s): every chunk of every array of the store, read with zarr alone."""
    import zarr

    group = zarr.open_group(str(store), mode="r")
    t0, nbytes = time.perf_counter(), 0
    for _, array in group.arrays():
        for i in range(0, array.shape[0], array.chunks[0]):
            nbytes += np.asarray(array[i:i + array.chunks[0]]).nbytes
    return nbytes / 1e9, nbytes / 1e9 / (time.perf_counter() - t0)


def splits(store: Path) -> list[str]:
    import xarray as xr

    times = xr.open_zarr(store)["time"].values
    n = times.size
    train_end, val_end = times[int(0.7 * n) - 1], times[int(0.85 * n) - 1]
    fmt = lambda t: str(np.datetime_as_string(t, unit="h"))  # noqa: E731
    return [f"data.train={{start: '{fmt(times[0])}', end: '{fmt(train_end)}'}}",
            f"data.validation={{start: '{fmt(times[int(0.7 * n)])}', end: '{fmt(val_end)}'}}",
            f"data.test={{start: '{fmt(times[int(0.85 * n)])}', end: '{fmt(times[-1])}'}}"]


def training_overrides(store: Path) -> list[str]:
    """configs/base.yaml's network with the dry world's variables, a few cheap steps, no validation."""
    sets = [f"data.variables={json.dumps(DRY_VARIABLES)}", "data.batch_size=1", "data.prefetch=1",
            "train.members=2", "train.steps=3", "train.rollout_lengths=[1]", "train.rollout_starts=[0]",
            "train.warmup_steps=1", "train.validate_every=0", "train.checkpoint_every=3", "train.log_every=1",
            "train.keep_checkpoints=1", *splits(store)]
    return [a for s in sets for a in ("--set", s)]


def pipeline(world: Path, work: Path, days: float, grid: str = "1.5") -> list[dict]:
    store = work / f"wb2-{grid}deg.zarr"
    rows = []
    print(f"{grid} deg pipeline (wall time from outside the process, peak resident memory):")
    if not store.exists():
        rows.append(stage("world-wb2", ["world-wb2", str(world), "--grid", grid, "--days", str(days), "--out",
                                        str(store), "--quiet"], work / "world-wb2.log"))
    gb, rate = raw_read_rate(store)
    print(f"  reference: raw zarr read of the store, {gb:.2f} GB at {rate:.2f} GB/s")
    sets = training_overrides(store)
    rows.append(stage("inspect", ["inspect", str(store)], work / "inspect.log"))
    rows.append(stage("stats", ["stats", "--config", str(BASE), *sets, "--data", str(store), "--out",
                                str(work / "stats.nc")], work / "stats.log"))
    workdir = work / "train"
    rows.append(stage("train remat", ["train", "--config", str(BASE), *sets, "--set", "model.remat_blocks=true",
                                      "--data", str(store), "--workdir", str(workdir), "--quiet"], work / "train.log"))
    if "failed" in rows[-1]:  # base does not fit here: the stages after it with half its width, labelled
        workdir = work / "train-e192"
        rows.append(stage("train e192", ["train", "--config", str(BASE), *sets, "--set", "model.embed_dim=192",
                                         "--data", str(store), "--workdir", str(workdir), "--quiet"],
                          work / "train-e192.log"))
    import xarray as xr

    times = xr.open_zarr(store)["time"].values
    inits = [str(np.datetime_as_string(t, unit="h")) for t in times[int(0.85 * times.size)::4][:2]]
    forecast = work / "forecast.zarr"
    rows.append(stage("forecast", ["forecast", "--checkpoint", str(workdir), "--data", str(store), "--members", "2",
                                   "--init-times", *inits, "--lead-hours", "24", "--out", str(forecast), "--quiet"],
                      work / "forecast.log"))
    rows.append(stage("verify", ["verify", "--forecast", str(forecast), "--truth", str(store), "--out",
                                 str(work / "scores.nc"), "--quiet"], work / "verify.log"))
    said = (work / ("train.log.out" if workdir.name == "train" else "train-e192.log.out")).read_text()
    rows.append({"stage": "reference", "raw_read_gb": gb, "raw_read_gb_s": rate,
                 "train_line": [line for line in said.splitlines() if line.startswith("weatherens train:")]})
    print("  " + " ".join(rows[-1]["train_line"]))
    return rows


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a float32 (n x n) @ (n x n) on these cores (best of `repeats`)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def predictor_at(grid: str, network: str, lmax: int = 0):
    """(experiment, Predictor, build seconds) of the small or base network on a grid, dry world channels."""
    from weatherens import config
    from weatherens import grid as grid_mod
    from weatherens.model.predictor import Predictor
    from weatherens.world import wb2

    poles = grid != "64x32"  # WB2's 64 x 32 grid has no poles, as the physics world archives it
    nlon, nlat = wb2.wb2_grid(grid) if poles else (64, 32)
    lat, lon = grid_mod.equiangular_latitudes(nlat, with_poles=poles), grid_mod.longitudes(nlon)
    # the FFT, as on GPUs (on CPUs `auto` takes a matmul up to 256 longitudes: 1.5 deg base +15 % FLOPs)
    exp = config.load(BASE if network == "base" else ROOT / "configs" / "small.yaml",
                      ([f"data.variables={json.dumps(DRY_VARIABLES)}"] if network == "base" else [])
                      + ([f"model.lmax={lmax}"] if lmax else []) + ["model.zonal_transform=fft"])
    levels = exp.data.levels
    channels = [f"{v}@{lv}" for v in exp.data.variables if v in wb2.world_model.LEVEL_VARIABLES for lv in levels]
    channels += [v for v in exp.data.variables if v not in wb2.world_model.LEVEL_VARIABLES]
    c = len(channels)
    t0 = time.perf_counter()
    predictor = Predictor(exp.model, channels, exp.data.forcings, lat, lon, np.zeros(c), np.ones(c), np.ones(c),
                          np.zeros((len(exp.data.static), nlat, nlon)))
    return exp, predictor, time.perf_counter() - t0


def forward_inputs(predictor, abstract: bool):
    """The one-member step's arguments after the tables: params, two states, two forcings, key, noise."""
    import jax
    import jax.numpy as jnp

    c, nf = len(predictor.channels), len(predictor.forcings)
    nlat, nlon = predictor.lat.size, predictor.lon.size
    if abstract:
        field = jax.ShapeDtypeStruct((c, nlat, nlon), jnp.float32)
        forcing = jax.ShapeDtypeStruct((nf, nlat, nlon), jnp.float32)
        return (jax.eval_shape(lambda: predictor.init_params(jax.random.key(0))), field, field, forcing, forcing,
                jax.eval_shape(lambda: jax.random.key(0)),
                jax.eval_shape(lambda: predictor.initial_noise(jax.random.key(0))))
    field, forcing = jnp.zeros((c, nlat, nlon), jnp.float32), jnp.zeros((nf, nlat, nlon), jnp.float32)
    return (predictor.init_params(jax.random.key(0)), field, field, forcing, forcing, jax.random.key(1),
            predictor.initial_noise(jax.random.key(2)))


def forward_macs(predictor) -> dict[str, float]:
    """Multiply-adds of one member's forward step in the dense contractions, by part (FFTs and
    elementwise work left out; the count of scripts/bench_sfno.py for any grid and width):
    pointwise = the encoder, decoder, skips and MLPs (C_in x C_out per grid point);
    transforms = the spectral convolutions' analysis and synthesis (2 x 2C x nlat per (l, m) pair
    contracted, the pairs of `layers.order_chunks`); mix = their per-degree weights (4 C^2 per pair)."""
    from weatherens.model.layers import order_chunks

    cfg, sht = predictor.cfg, predictor.sht
    e = cfg.embed_dim
    h = max(1, int(round(cfg.mlp_ratio * e)))
    points = predictor.lat.size * predictor.lon.size
    pointwise = (predictor.in_channels * h + h * e + cfg.blocks * (e * e + 2 * e * h) + e * h
                 + h * len(predictor.channels)) * points
    pairs = sum((m1 - m0) * (sht.lmax + 1 - m0) for m0, m1 in order_chunks(sht.mmax + 1))
    return {"pointwise": float(pointwise), "transforms": float(cfg.blocks * pairs * 4 * e * predictor.lat.size),
            "mix": float(cfg.blocks * pairs * 4 * e * e)}


def with_rematerialised_blocks(predictor):
    """The same predictor (tables shared, not rebuilt: minutes at 0.25 deg) with `model.remat_blocks` on."""
    import copy

    import jax
    from flax import nnx

    remat = copy.copy(predictor)
    remat.cfg = dataclasses.replace(predictor.cfg, remat_blocks=True)
    remat.graphdef, _ = nnx.split(nnx.eval_shape(lambda: remat._network(jax.random.key(0))))
    return remat


def step_costs(grid: str, network: str, lmax: int = 0) -> dict:
    """XLA cost and memory analysis of the forward step and training step of `network` on `grid`."""
    import jax
    import jax.numpy as jnp

    from weatherens.train import step as train_step_lib

    exp, predictor, t_build = predictor_at(grid, network, lmax)
    c, nf = len(predictor.channels), len(predictor.forcings)
    nlat, nlon = predictor.lat.size, predictor.lon.size
    tables = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), predictor.tables())
    args = forward_inputs(predictor, abstract=True)
    forward = jax.jit(predictor.with_tables(predictor.step)).lower(tables, *args).compile()
    cfg = dataclasses.replace(exp.train, members=2, rollout_lengths=(1,), rollout_starts=(0,), gradient_steps=0,
                              ema_decay=0.0, phase_learning_rates=(), phase_warmup_steps=())
    objective = train_step_lib.Objective(predictor, cfg)
    optimizer = train_step_lib.make_optimizer(cfg)
    state = jax.eval_shape(lambda: train_step_lib.init_state(predictor, optimizer, 0))
    batch = {"inputs": jax.ShapeDtypeStruct((1, 2, c, nlat, nlon), jnp.float32),
             "forcings": jax.ShapeDtypeStruct((1, 3, nf, nlat, nlon), jnp.float32),
             "targets": jax.ShapeDtypeStruct((1, 1, c, nlat, nlon), jnp.float32)}
    train = jax.jit(predictor.with_tables(train_step_lib.make_train_step(objective, optimizer, 0)),
                    donate_argnums=1).lower(tables, state, batch).compile()
    remat = with_rematerialised_blocks(predictor)
    train_remat = jax.jit(remat.with_tables(train_step_lib.make_train_step(
        train_step_lib.Objective(remat, cfg), optimizer, 0)), donate_argnums=1).lower(tables, state, batch).compile()
    out = {"grid": f"{nlon}x{nlat}", "network": network + (f"-l{lmax}" if lmax else ""), "channels": c,
           "lmax": predictor.sht.lmax, "parameters": int(sum(np.prod(x.shape) for x in jax.tree.leaves(args[0]))),
           "table_gib": sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tables)) / 2**30,
           "build_tables_s": t_build, "forward_macs": forward_macs(predictor)}
    for name, compiled in (("forward", forward), ("train", train), ("train_remat", train_remat)):
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        mem = compiled.memory_analysis()
        out[name] = {"gflop": cost.get("flops", float("nan")) / 1e9,
                     "gb_accessed": cost.get("bytes accessed", float("nan")) / 1e9,
                     "argument_gib": mem.argument_size_in_bytes / 2**30, "temp_gib": mem.temp_size_in_bytes / 2**30,
                     "output_gib": mem.output_size_in_bytes / 2**30}
    return out


def timed_forward(grid: str, network: str, lmax: int = 0, repeats: int = 2) -> dict:
    """Wall time of one member's forward step, run (best of `repeats` after the compiling call)."""
    import jax

    _, predictor, _ = predictor_at(grid, network, lmax)
    args = forward_inputs(predictor, abstract=False)
    step = jax.jit(predictor.with_tables(predictor.step))
    tables = predictor.tables()
    t0 = time.perf_counter()
    jax.block_until_ready(step(tables, *args))
    first = time.perf_counter() - t0
    best = min(_timed(lambda: jax.block_until_ready(step(tables, *args))) for _ in range(repeats))
    return {"grid": grid, "network": network + (f"-l{lmax}" if lmax else ""), "first_s": first, "step_s": best,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def print_costs(rows: list[dict], rate: float) -> None:
    print("\nForward multiply-adds per member by part (dense contractions, counted from the architecture):")
    for r in rows:
        m = r["forward_macs"]
        total = sum(m.values())
        print(f"  {r['network']:<10}{r['grid']:>10}  L={r['lmax']:<4} {2 * total / 1e9:9.1f} GFLOP: pointwise "
              f"{100 * m['pointwise'] / total:4.1f} %, transforms {100 * m['transforms'] / total:4.1f} %, "
              f"spectral mix {100 * m['mix'] / total:4.1f} %")
    print(f"\nXLA cost analysis (reference: float32 matmul on these cores, {rate / 1e9:.1f} GFLOP/s)")
    print(f"{'network':<10}{'grid':>10}{'params':>9}{'tables':>9}{'step':>9}{'GFLOP':>10}{'GB moved':>10}"
          f"{'args GiB':>10}{'temp GiB':>10}{'CPU s at ref':>14}")
    for r in rows:
        for name in ("forward", "train", "train_remat"):
            c = r[name]
            # XLA counts a loop's body once: the scanned (rematerialised) blocks' FLOPs are not comparable
            flops = (f"{c['gflop']:>10.1f}{c['gb_accessed']:>10.2f}" if name != "train_remat" else f"{'-':>10}{'-':>10}")
            seconds = f"{c['gflop'] * 1e9 / rate:>14.2f}" if name != "train_remat" else f"{'-':>14}"
            print(f"{r['network']:<10}{r['grid']:>10}{r['parameters'] / 1e6:>8.1f}M{r['table_gib']:>8.2f}G"
                  f"{name.replace('train_remat', 'remat'):>9}{flops}{c['argument_gib']:>10.2f}{c['temp_gib']:>10.2f}{seconds}")


def short_world(work: Path) -> Path:
    world = work / "world.zarr"
    if not world.exists():
        print("building a short physics world (30-day spin-up, 24 days archived) ...", flush=True)
        stage("world", ["world", "--out", str(world), "--years", str(24 / 365), "--set", "world.spinup_days=30",
                        "--set", "world.spinup_final_days=5", "--quiet"], work / "world.log")
    return world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="a physics world store (default: a short one built in --work)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_scale"), help="working folder (reused)")
    parser.add_argument("--days", type=float, default=20.0, help="days of the 1.5 deg store (default 20)")
    parser.add_argument("--pipeline-grid", default="1.5", help="grid of the pipeline (default 1.5; 5.625 for a smoke run)")
    parser.add_argument("--full", action="store_true", help="also 0.25 deg: store, cost analysis, one forward step")
    parser.add_argument("--skip-pipeline", action="store_true", help="only the cost analysis")
    parser.add_argument("--analysis-only", action="store_true", help="no forward step runs (the analysis does not depend on load)")
    parser.add_argument("--grids", nargs="+", help="grids of the cost analysis (default 64x32 1.5, and 0.25 with --full)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}
    if not args.skip_pipeline:
        world = args.world or short_world(args.work)
        report["pipeline"] = pipeline(world, args.work, args.days, args.pipeline_grid)
    rate = matmul_rate()
    grids = args.grids or ["64x32", "1.5"] + (["0.25"] if args.full else [])
    costs = []
    for grid in grids:
        for network, lmax in (("small", 0), ("base", 0)) + ((("base", 240),) if grid == "0.25" else ()):
            print(f"  analysing {network}{f' lmax {lmax}' if lmax else ''} at {grid} ...", flush=True)
            costs.append(step_costs(grid, network, lmax))
    report |= {"matmul_gflop_s": rate / 1e9, "costs": costs}
    print_costs(costs, rate)
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    runs = []
    for c in costs:  # run the forward step where its analysed memory fits in 3/4 of the RAM
        need = c["forward"]["argument_gib"] + c["forward"]["temp_gib"] + c["forward"]["output_gib"]
        if args.analysis_only:
            break
        if c["grid"] != "64x32" and need < 0.75 * ram_gib:
            network, _, lmax = c["network"].partition("-l")
            grid = {"240x121": "1.5", "1440x721": "0.25"}[c["grid"]]
            runs.append(timed_forward(grid, network, int(lmax or 0)))
            r = runs[-1]
            print(f"  forward step run: {r['network']} at {c['grid']}: {r['step_s']:.2f} s (first {r['first_s']:.1f} s), "
                  f"projected at the matmul rate {c['forward']['gflop'] * 1e9 / rate:.2f} s, "
                  f"ratio {r['step_s'] / (c['forward']['gflop'] * 1e9 / rate):.2f}; peak RSS {r['peak_rss_gib']:.1f} GiB")
        else:
            print(f"  forward step not run: {c['network']} at {c['grid']} needs {need:.1f} GiB by XLA's analysis "
                  f"(RAM {ram_gib:.0f} GiB)" if c["grid"] != "64x32" else "", end="\n" if c["grid"] != "64x32" else "")
    report["forward_runs"] = runs
    if args.full:
        world = args.world or short_world(args.work)
        store = args.work / "wb2-0.25deg.zarr"
        if not store.exists():
            report["wb2_0.25"] = stage("world-wb2", ["world-wb2", str(world), "--grid", "0.25", "--days", "1",
                                                     "--out", str(store), "--quiet"], args.work / "world-wb2-0.25.log")
    (args.work / "bench_scale.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwritten {args.work / 'bench_scale.json'} (peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)")


if __name__ == "__main__":
    main()
