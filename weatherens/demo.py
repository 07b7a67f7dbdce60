"""`weatherens demo`: the main job on the embedded default, from world to scorecard.

1. build (or reuse from the cache) the physics world;
2. take the shipped checkpoint trained by `weatherens train` on that world (`checkpoints/<name>`), or
   train one with --retrain (or when the shipped one was trained on another world);
3. a hindcast of the ML ensemble from init times spread over the test split;
4. the baselines: persistence, the climatological ensemble, the operational analogue (a cheaper
   physics model from the analysis of the archived fields, perturbed with the archive's analysis
   errors) and the predictability limit (the world's own model from the same analysis and
   perturbations);
5. `weatherens verify` of all five against the world, with figures;
6. a scorecard (printed) whose ratios carry 95 % intervals from the paired per-init scores, and a
   Markdown report with the figures in RUN_DIR.

Every stage is reused when its output is already there, so a second run is quick and a killed run
goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from weatherens import config, files
from weatherens.data.names import MEMBER_DIM
from weatherens.errors import InputError, WeatherensError
from weatherens.shipped import CHECKPOINTS, CONFIGS
from weatherens.world import store as world_store

NAMES = ("weatherens", *config.BASELINES)
SCORECARD_CHANNELS = (("geopotential", 500), ("temperature", 850), ("2m_temperature", None))
# Scored at every level (the time budget: `weatherens verify` of the forecasts in RUN_DIR/forecasts
# scores the winds and surface pressure too).
SCORED_VARIABLES = tuple(dict.fromkeys(v for v, _ in SCORECARD_CHANNELS))
ENSEMBLES_WITH_SPECTRA = ("weatherens",)  # the report's spectra are the ML ensemble's; the rest: scores only (time)
SCORES_SUFFIXES = ("rank_histogram", "sh_spectrum", "zonal_spectrum", "n_init", "per_init")
SCORECARD_LEADS_H = (6, 24, 48, 72, 120, 168, 240)


def experiment(quick: bool, path: Path | None = None, overrides: tuple[str, ...] = ()) -> config.Experiment:
    """The demo's experiment: configs/small.yaml (default world), configs/tiny.yaml for --quick, or `path`."""
    path = Path(path) if path is not None else CONFIGS / ("tiny.yaml" if quick else "small.yaml")
    if not path.exists():
        raise InputError(f"{path}: no such config file")
    return config.load(path, overrides)  # checks demo.baselines against config.BASELINES


def run_names(exp: config.Experiment) -> tuple[str, ...]:
    """The forecasts a run makes and scores: the ML ensemble and the config's baselines, in NAMES order."""
    return tuple(n for n in NAMES if n == NAMES[0] or n in exp.demo.baselines)


def _config_key(cfg) -> str:
    """12 hex digits of the sha256 of a config's canonical JSON: a cache key that changes with any setting."""
    return hashlib.sha256(json.dumps(config.to_dict(cfg), sort_keys=True).encode()).hexdigest()[:12]


def world_path(cache: Path, cfg: config.WorldConfig) -> Path:
    """Cache location of a world, keyed by its full configuration."""
    return Path(cache) / f"world-{cfg.resolution}-{_config_key(cfg)}.zarr"


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


# What a realisation of the world may change without changing its climate (the physics is the same).
REALISATION_FIELDS = ("years", "seed", "state_every_days")
# What the model sees: a checkpoint serves data that agree in these.
MODEL_DATA_FIELDS = ("variables", "levels", "static", "timestep_hours", "forcings")


def _span(r: dict) -> tuple[np.datetime64, np.datetime64]:
    """[start, stop) of an inclusive TimeRange dict; an end given to the day (or hour) covers that whole day
    (hour), as xarray's partial-string slicing does."""
    end = np.datetime64(r["end"])
    unit: Any = np.datetime_data(end.dtype)[0]  # numpy's stubs want a literal unit
    return np.datetime64(r["start"], "ns"), (end + np.timedelta64(1, unit)).astype("M8[ns]")


def _overlap(a: dict, b: dict) -> bool:
    (a0, a1), (b0, b1) = _span(a), _span(b)
    return bool(a0 < b1 and b0 < a1)


def checkpoint_misfit(trained: dict, exp: config.Experiment) -> str | None:
    """Why a checkpoint trained with config `trained` (a `config.to_dict`) cannot score `exp`'s test split, or None.

    It fits when it was trained on the same climate (every world setting but the realisation's length,
    seed and state interval) with the same channels, and never saw the test split: either another
    realisation (seed) of the world, or the same one with training and validation apart from the test.
    """
    world, data = config.to_dict(exp.world), config.to_dict(exp.data)
    for key, value in world.items():
        if key not in REALISATION_FIELDS and trained["world"][key] != value:
            return f"trained on another world (world.{key}: {trained['world'][key]!r} there, {value!r} here)"
    for key in MODEL_DATA_FIELDS:
        if trained["data"][key] != data[key]:
            return f"trained on other channels (data.{key}: {trained['data'][key]!r} there, {data[key]!r} here)"
    if trained["world"]["seed"] == world["seed"]:
        for split in ("train", "validation"):
            if _overlap(trained["data"][split], data["test"]):
                return f"its {split} split {trained['data'][split]} overlaps this test split {data['test']}"
    return None


def checkpoint_dir(exp: config.Experiment, world: Path, cache: Path, retrain: bool, progress: bool) -> Path:
    """The shipped checkpoint if it fits this world's test split (`checkpoint_misfit`), else one trained now (cached)."""
    from weatherens import checkpoint
    from weatherens.train import loop

    shipped = CHECKPOINTS / exp.demo.checkpoint
    if not retrain and shipped.exists():
        meta = checkpoint.load_meta(shipped)
        misfit = checkpoint_misfit(meta["config"], exp)
        if misfit is None:
            trained = meta["config"]
            print(f"using the shipped checkpoint {shipped} ({trained['name']}, step {meta['step']}: trained on "
                  f"{trained['data']['train']['start']}..{trained['data']['train']['end']} of the world with seed "
                  f"{trained['world']['seed']}; --retrain to train one on this world)")
            return shipped
        print(f"{shipped} does not fit: {misfit}; training one")
    workdir = Path(cache) / f"train-{exp.name}-{_config_key(exp)}"
    loop.train(exp, str(world), workdir, progress=progress)
    return workdir


def demo_inits(world: Path, exp: config.Experiment) -> np.ndarray:
    """Init times every `demo.init_every_hours` from the test split's start whose whole forecast lies in
    the test split and the archive, at most `demo.max_inits`."""
    times = xr.open_zarr(world)["time"].values
    test, d = exp.data.test, exp.demo
    lead = np.timedelta64(d.lead_hours, "h")
    start, end = np.datetime64(test.start, "ns"), min(np.datetime64(test.end, "ns"), times[-1])
    candidates = np.arange(start, end + np.timedelta64(1, "ns"), np.timedelta64(d.init_every_hours, "h"))
    inits = candidates[np.isin(candidates, times) & (candidates + lead <= end)][: d.max_inits]
    if inits.size == 0:
        raise InputError(f"{world}: no init time every {d.init_every_hours} h in the test split {test.start}..{test.end} "
                         f"with {d.lead_hours} h of truth after it")
    return inits


def _newer(scores: Path, forecast: Path) -> bool:
    """Scores written (atomically) after the forecast they score was completed."""
    meta = Path(forecast) / "zarr.json"
    return scores.exists() and meta.exists() and scores.stat().st_mtime_ns > meta.stat().st_mtime_ns


def _once(path: Path, make) -> Path:
    return path if path.exists() else Path(make(path))


def make_forecast(name: str, exp: config.Experiment, world: Path, ckpt: Path, inits: np.ndarray, path: Path,
                  progress: bool) -> Path:
    """Write the demo's forecast `name` (one of NAMES) to `path`; returns it. Module-level, so that a second
    process can run it."""
    from weatherens.infer import baselines, forecast
    from weatherens.world import ensembles

    d = exp.demo
    common: dict[str, Any] = dict(variables=exp.data.variables, levels=exp.data.levels,
                                  timestep_hours=exp.data.timestep_hours, progress=progress)
    if name == "weatherens":
        return forecast.forecast([ckpt], str(world), inits, d.members, d.lead_hours, path,
                                 perturbation=d.perturbation, progress=progress)
    if name == "persistence":
        return baselines.persistence(str(world), inits, d.lead_hours, path, **common)
    if name == "climatology":
        return baselines.climatology(str(world), inits, d.members, d.lead_hours, path, train=exp.data.train, **common)
    if name == "physics_analogue":
        return ensembles.archived_fields_ensemble(
            world, inits, d.analogue_members, d.lead_hours, path, resolution=d.analogue_resolution,
            timestep_minutes=d.analogue_timestep_minutes, perturbation_scale=d.analogue_scale,
            model_error_scale=d.analogue_model_error_scale, error_span=exp.data.train, progress=progress)
    if name == "physics_limit":
        return ensembles.predictability_limit_ensemble(
            world, inits, d.limit_members, d.lead_hours, path, perturbation_scale=d.limit_scale,
            error_span=exp.data.train, progress=progress)
    raise InputError(f"unknown forecast {name!r}; known: {list(NAMES)}")


# Stage 3-5's second process makes and verifies these, in this order; the first, the others. Balanced by
# the measured times of each forecast and its verification (docs/benchmarks.md, the demo's two processes).
SECOND_PROCESS = ("physics_limit", "climatology", "persistence")


def cpu_halves() -> tuple[set[int], set[int]] | None:
    """Two disjoint halves of the CPUs this process may run on, or None (one CPU, or no affinity on this OS).

    Each of stage 3-5's two processes is pinned to one half before its first JAX computation, which sizes
    XLA's thread pool to it: unpinned, the two pools fight over the cores of a small machine
    (scripts/bench_pinning.py; figures in docs/benchmarks.md)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return set(cpus[: len(cpus) // 2]), set(cpus[len(cpus) // 2:])


def make_and_verify(names: tuple[str, ...], exp: config.Experiment, world: Path, ckpt: Path, inits: np.ndarray,
                    paths: dict[str, Path], run_dir: Path, progress: bool, cpus: set[int] | None = None) -> None:
    """Make each named forecast once (`_once`) and score it (`verify_all`), pinned to `cpus` when given.
    Module-level, so that a spawned process can run it."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    for name in names:
        t0 = time.perf_counter()
        _once(paths[name], lambda p, n=name: make_forecast(n, exp, world, ckpt, inits, p, progress))
        print(f"  {name}: {paths[name]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    verify_all(names, paths, world, run_dir, progress)


def forecast_paths(run_dir: Path, names: tuple[str, ...]) -> dict[str, Path]:
    return {name: run_dir / "forecasts" / f"{name}.zarr" for name in names}


def forecast_and_verify(exp: config.Experiment, world: Path, ckpt: Path, inits: np.ndarray, run_dir: Path,
                        progress: bool) -> dict[str, Path]:
    """Stages 3-5: every forecast of the run made once and scored; returns the scores files by name. Where
    there are two CPUs or more and both processes' forecasts are not all made, two spawned processes share
    the machine, each pinned to half of it (the second without progress bars); else this process does all."""
    from weatherens.verify import io

    names = run_names(exp)
    paths = forecast_paths(run_dir, names)
    out = run_dir / "forecasts"
    out.mkdir(parents=True, exist_ok=True)
    halves = cpu_halves()
    second = tuple(n for n in SECOND_PROCESS if n in names)
    first = tuple(n for n in names if n not in second)
    if halves is not None and all(any(not paths[n].exists() for n in group) for group in (first, second)):
        groups = [(first, progress, halves[0]), (second, False, halves[1])]
        spawn = multiprocessing.get_context("spawn")
        procs = [spawn.Process(target=make_and_verify, args=(group, exp, world, ckpt, inits, paths, run_dir, bar, cpus),
                               name=f"weatherens {'+'.join(group)}", daemon=True) for group, bar, cpus in groups]
        for proc in procs:
            proc.start()
        print(f"  {', '.join(groups[1][0])}: in a second process (no progress bars); each process on "
              f"{len(halves[0])} of {len(halves[0]) + len(halves[1])} CPUs", flush=True)
        for proc in procs:
            proc.join()
        failed = [proc.name for proc in procs if proc.exitcode != 0]
        if failed:
            raise WeatherensError(f"{out}: {', '.join(failed)} failed (exit codes "
                                  f"{[proc.exitcode for proc in procs]}); run the demo again to resume")
    else:
        make_and_verify(names, exp, world, ckpt, inits, paths, run_dir, progress)
    return {name: io.scores_path(run_dir / "scores.nc", name, several=True) for name in names}


def verify_all(names: tuple[str, ...], paths: dict[str, Path], world: Path, run_dir: Path, progress: bool) -> dict[str, Path]:
    """Scores files of the named forecasts (RUN_DIR/scores.<name>.nc), scored unless newer than their forecast."""
    from weatherens.verify import evaluation, io

    written = {}
    for name in names:
        written[name] = io.scores_path(run_dir / "scores.nc", name, several=True)
        if _newer(written[name], paths[name]):
            print(f"  {name}: reusing the scores in {written[name]}")
            continue
        t0 = time.perf_counter()
        evaluation.verify([str(paths[name])], str(world), written[name], names=[name], variables=SCORED_VARIABLES,
                          spectra_of=[name] if name in ENSEMBLES_WITH_SPECTRA else [], progress=progress)
        print(f"  {name}: verified ({time.perf_counter() - t0:.0f} s)", flush=True)
    return written


def _subset(ds: xr.Dataset, variables) -> xr.Dataset:
    """The scores of these forecast variables (with their rank histograms, spectra and counts)."""
    keep = [k for k in ds.data_vars if any(k == v or k in [f"{v}_{s}" for s in SCORES_SUFFIXES] for v in variables)]
    return ds[keep].assign_attrs(ds.attrs)


def _channel(ds: xr.Dataset, variable: str, level) -> xr.Dataset:
    """The scores of one scorecard channel: the variable's, at that level only."""
    one = _subset(ds, [variable])
    return one.sel(level=[level]) if level is not None and "level" in one.dims else one


def draw_figures(scores: dict[str, xr.Dataset], table: xr.Dataset | None, out_dir: Path) -> list[Path]:
    """The report's figures, for the scorecard channels only: skill against lead of all five forecasts,
    the scorecard of the ML ensemble against each baseline with significance (WB2 style), and the ML
    ensemble's spectra and rank histograms. table: `report.interval_table` (None: no baseline)."""
    from weatherens.verify import plots

    paths = plots.paired_scorecard(table, out_dir, "weatherens") if table is not None else []
    for variable, level in SCORECARD_CHANNELS:
        one = [_channel(ds, variable, level) for ds in scores.values()]
        ml = one[list(scores).index(NAMES[0])]
        paths += plots.skill_vs_lead(one, out_dir, variables=[variable])
        paths += plots.spectra(ml, out_dir, level=level)
        paths += plots.rank_histograms(ml, out_dir)
    return paths


def _members_line(paths: dict[str, Path]) -> str:
    sizes = {n: xr.open_zarr(p).sizes.get(MEMBER_DIM, 1) for n, p in paths.items() if n != NAMES[0]}
    return ", ".join(f"{n} {m}" for n, m in sizes.items())


def run(cache: Path, quick: bool = False, progress: bool = True, retrain: bool = False, out: Path = Path("runs"),
        config_path: Path | None = None, overrides: tuple[str, ...] = ()) -> int:
    """The main job; `config_path` and `overrides` run it on another experiment (RUN_DIR demo-<name>)."""
    t_start = time.perf_counter()
    exp = experiment(quick, config_path, overrides)
    run_dir = Path(out) / ("demo-quick" if quick else "demo" if config_path is None else f"demo-{exp.name}")
    names = run_names(exp)
    with files.lock(run_dir):
        return _run(exp, run_dir, names, cache, quick, progress, retrain, t_start)


def _run(exp: config.Experiment, run_dir: Path, names: tuple[str, ...], cache: Path, quick: bool, progress: bool,
         retrain: bool, t_start: float) -> int:
    t = _stage("1. physics world")
    world = world_path(cache, exp.world)
    with files.lock(world):
        world_store.build_world(world, exp.world, progress=progress)
    print(world_store.describe(world))
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _stage("2. the forecast model")
    ckpt = checkpoint_dir(exp, world, cache, retrain, progress)
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _stage("3-5. hindcast, baselines and verification")
    inits = demo_inits(world, exp)
    print(f"{len(inits)} initialisation times: {', '.join(str(np.datetime64(i, 'h')) for i in inits)}; "
          f"{exp.demo.members} members, {exp.demo.lead_hours} h")
    score_files = forecast_and_verify(exp, world, ckpt, inits, run_dir, progress)
    scores = {n: xr.load_dataset(score_files[n]) for n in names}  # the ML ensemble first
    from weatherens.verify import report as tables

    intervals = tables.interval_table(scores, SCORECARD_CHANNELS) if len(scores) > 1 else None
    draw_figures(scores, intervals, run_dir / "figures")
    print(f"({time.perf_counter() - t:.0f} s)")

    leads = [h for h in SCORECARD_LEADS_H if h <= exp.demo.lead_hours]
    fractions = tables.skill_fraction_table(scores, SCORECARD_CHANNELS, leads)
    table = tables.scorecard(scores, SCORECARD_CHANNELS, leads, intervals, fractions)
    truncation = int(exp.world.resolution.lstrip("Tt"))
    spectra = tables.spectra_check(scores[NAMES[0]], SCORECARD_CHANNELS, truncation)
    ssr = tables.ssr_table(scores, SCORECARD_CHANNELS, leads)
    print("\n== Scorecard (global; ratios < 1: weatherens better)\n" + table)
    print("\nSpread-skill ratio (debiased; 1 = reliable):\n" + ssr)
    print(f"\nMember spectra against the truth's (largest deviation over 1 <= l <= {truncation}):\n" + spectra)
    report = run_dir / "report.md"
    figures = sorted((run_dir / "figures").glob("*.png"))
    report.write_text(
        f"# weatherens demo{' (quick)' if quick else ''}\n\nWorld: `{world}`; checkpoint: `{ckpt}`; "
        f"{len(inits)} inits ({', '.join(str(np.datetime64(i, 'h')) for i in inits)}), {exp.demo.members} members, "
        f"{exp.demo.lead_hours} h; members of the baselines: {_members_line(forecast_paths(run_dir, names))}.\n\n## Scorecard (global)\n\n"
        f"{table}\n\n## Spread-skill ratio (debiased)\n\n{ssr}\n\n## Member spectra vs truth\n\n```\n{spectra}\n```\n\n## Figures\n\n"
        + "".join(f"![{f.stem}](figures/{f.name})\n" for f in figures))
    print(f"\nreport: {report} ({len(figures)} figures); whole run {time.perf_counter() - t_start:.0f} s")
    return 0
