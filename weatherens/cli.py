"""`weatherens <command>`: a thin command line; every command calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from weatherens import config as config_mod
from weatherens.errors import WeatherensError

DEFAULT_CACHE = Path.home() / ".cache" / "weatherens"


def _add_config_args(p: argparse.ArgumentParser,
                     default: str = "defaults apply when omitted") -> None:
    p.add_argument("--config", type=Path, help=f"experiment YAML (configs/*.yaml); {default}")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key, e.g. --set data.batch_size=16 (repeatable)",
    )


def _load_config(args: argparse.Namespace, extra: Sequence[str] = ()) -> config_mod.Experiment:
    return config_mod.load(args.config, list(args.overrides) + list(extra))


def cmd_world(args: argparse.Namespace) -> int:
    from weatherens.world import store as world_store

    extra = [f"world.{k}={v}" for k, v in (("years", args.years), ("seed", args.seed), ("resolution", args.resolution)) if v is not None]
    exp = _load_config(args, extra)
    path = world_store.build_world(args.out, exp.world, progress=not args.quiet)
    print(world_store.describe(path))
    return 0


def cmd_world_wb2(args: argparse.Namespace) -> int:
    from weatherens.world import wb2

    path = wb2.write_wb2_store(args.world, args.out, args.grid, days=args.days, start=args.start, progress=not args.quiet)
    print(f"weatherens world-wb2: {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from weatherens import sharding
    from weatherens.train import loop

    sharding.initialize(args.coordinator, args.num_processes, args.process_id)
    exp = _load_config(args)
    store = args.data or exp.data.store
    if not store:
        raise config_mod.ConfigError("no training data: pass --data STORE or set data.store")
    try:
        summary = loop.train(exp, store, args.workdir, progress=not args.quiet)
    except loop.TrainingDiverged as err:
        print(f"weatherens train: {err}", file=sys.stderr)
        return 3
    val = summary.get("validation", {})
    print(f"weatherens train: step {summary.get('step', summary['start_step'])}, loss {summary.get('loss', float('nan')):.4f}"
          + (f", validation fair CRPS {val['loss']:.4f}" if val else "")
          + f"; {summary['step_s']:.2f} s per step after the first ({summary['first_step_s']:.1f} s, compiling)"
          + f"; data wait {100 * summary['data_wait_share']:.1f} % of step time; checkpoints in {args.workdir}/checkpoints")
    if val:
        print(f"\n{'channel (6 h, standardised)':<30}{'fair CRPS':>11}{'persistence':>13}{'ratio':>8}")
        for name, crps in val["crps"].items():
            ref = val["persistence_crps"][name]
            print(f"{name:<30}{crps:>11.4f}{ref:>13.4f}{crps / ref:>8.2f}")
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from weatherens.infer import forecast

    defaults = _load_config(args).demo
    members = defaults.members if args.members is None else args.members
    perturbation = defaults.perturbation if args.perturbation is None else args.perturbation
    path = forecast.forecast(
        args.checkpoint, args.data, forecast.parse_init_times(args.init_times), members, args.lead_hours, args.out,
        perturbation=perturbation, amplitude=args.amplitude, breeding_cycles=args.breeding_cycles, seed=args.seed,
        lead_chunk=args.lead_chunk, member_chunk=args.member_chunk, progress=not args.quiet)
    print(f"forecast: {path}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from weatherens.infer import baselines, forecast

    exp = _load_config(args)
    inits = forecast.parse_init_times(args.init_times)
    store = args.data or exp.data.store
    common = dict(progress=not args.quiet)
    if args.kind == "persistence":
        path = baselines.persistence(store, inits, args.lead_hours, args.out, variables=exp.data.variables,
                                     levels=exp.data.levels, timestep_hours=exp.data.timestep_hours, **common)
    elif args.kind == "climatology":
        path = baselines.climatology(store, inits, args.members, args.lead_hours, args.out,
                                     variables=exp.data.variables, levels=exp.data.levels, train=exp.data.train,
                                     timestep_hours=exp.data.timestep_hours, window_days=args.window_days,
                                     seed=args.seed, **common)
    else:
        from weatherens.world import ensembles

        if args.kind == "perfect":
            path = ensembles.perfect_model_ensemble(store, inits, args.members, args.lead_hours, args.out,
                                                           amplitude_k=args.amplitude_k, seed=args.seed, **common)
        else:
            d = exp.demo
            scale = args.perturbation_scale
            if scale is None:
                scale = d.analogue_scale if args.kind == "archived" else d.limit_scale
            kw = dict(perturbation_scale=scale, error_span=exp.data.train, seed=args.seed, **common)
            if args.kind == "archived":
                resolution = args.resolution or d.analogue_resolution
                timestep = args.timestep_minutes
                if timestep is None and resolution == d.analogue_resolution:
                    timestep = d.analogue_timestep_minutes
                model_error_scale = args.model_error_scale
                if model_error_scale is None:
                    model_error_scale = d.analogue_model_error_scale
                path = ensembles.archived_fields_ensemble(store, inits, args.members, args.lead_hours, args.out,
                                                                 resolution=resolution, timestep_minutes=timestep,
                                                                 model_error_scale=model_error_scale, **kw)
            else:
                path = ensembles.predictability_limit_ensemble(store, inits, args.members, args.lead_hours,
                                                                      args.out, **kw)
    print(f"{args.kind}: {path}")
    return 0


def _add_forecast_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-times", nargs="+", required=True, metavar="TIME",
                   help="initialisation times: 2000-06-01T00 ... or ranges START/END/STEP, e.g. 2000-06-01/2000-06-30/24h")
    p.add_argument("--lead-hours", type=int, required=True, help="forecast length in hours (a multiple of the step)")
    p.add_argument("--out", type=Path, required=True, help="forecast zarr to write (WeatherBench 2 format)")
    p.add_argument("--seed", type=int, default=0, help="root of every member's noise (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_inspect(args: argparse.Namespace) -> int:
    from weatherens import data

    ds = data.open(args.store, variables=args.variables or None)
    print(ds)
    try:
        data.check_training_ready(ds, timestep_hours=args.timestep_hours)
        print(f"\nready for training at a {args.timestep_hours} h step")
    except data.DataError as err:
        print(f"\nnot ready for training: {err}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from weatherens.data import era5, stats

    cfg = _load_config(args).data
    store = args.data or cfg.store
    ds = era5.open(store, cfg.variables, cfg.levels, cfg.train.as_slice())
    table = stats.load_or_compute(ds, args.out, cfg.timestep_hours)
    print(table)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from weatherens.verify import evaluation

    written = evaluation.verify(
        args.forecast, args.truth, args.out, names=args.name, climatology=args.climatology,
        variables=args.variables, regions=args.regions or evaluation.REGIONS, thresholds=args.thresholds or (),
        plots=args.plots, baseline=args.baseline, scheduler=args.scheduler, seed=args.seed, metrics=args.metrics,
        progress=not args.quiet,
    )
    for path in written:
        print(f"scores: {path}")
    if args.plots:
        print(f"plots: {args.plots}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import xarray as xr

    from weatherens.data import names
    from weatherens.verify import report

    if len(args.scores) < 2:
        raise config_mod.ConfigError(f"compare: {len(args.scores)} scores file(s); give the candidate and one or more "
                                     "references")
    labels = args.name or [Path(p).stem.split(".")[-1] for p in args.scores]  # scores.<name>.nc -> <name>
    if len(labels) != len(args.scores) or len(set(labels)) != len(labels):
        raise config_mod.ConfigError(f"compare: need one distinct --name per scores file, got {labels}")
    scores = {}
    for label, path in zip(labels, args.scores):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such scores file (written by `weatherens verify`)")
        scores[label] = xr.load_dataset(path)
    channels = [names.parse_channel(c) for c in args.channels]
    for label, ds in scores.items():
        for variable, _ in channels:
            if f"{variable}_per_init" not in ds:
                raise config_mod.ConfigError(f"{args.scores[labels.index(label)]}: no {variable}_per_init (scores "
                                             "written by a weatherens verify older than per-init scores, or no such "
                                             "variable)")
    table = report.interval_table(scores, channels)
    print(report.scorecard(scores, channels, args.leads, table))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from weatherens import demo

    return demo.run(cache=args.cache, quick=args.quick, progress=not args.quiet, retrain=args.retrain, out=args.out,
                    config_path=args.config, overrides=tuple(args.overrides))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weatherens",
        description="ML ensemble weather forecasting in JAX: data, physics world, training, ensembles, verification.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log the library's progress notes to stderr")
    parser.add_argument("--debug", action="store_true",
                        help="on an expected error (bad input), show the traceback instead of the one-line message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compare", help="is a difference real? a candidate's fair CRPS against references, with 95 %% "
                                       "paired intervals from `weatherens verify`'s per-init scores")
    p.add_argument("scores", nargs="+", help="scores netCDF files of `weatherens verify` on the same inits: the "
                                             "candidate first, then the references")
    p.add_argument("--name", action="append", help="a label per scores file (default: from the file name)")
    p.add_argument("--channels", nargs="+", default=["geopotential@500", "temperature@850", "2m_temperature"],
                   help="variable@level or variable (default: z500, t850, 2 m temperature)")
    p.add_argument("--leads", nargs="+", type=int, default=[24, 72, 120, 240], help="lead times in hours")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="the main job: world -> model -> 50-member hindcast -> baselines -> scorecard")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"where worlds are cached (default {DEFAULT_CACHE})")
    p.add_argument("--quick", action="store_true", help="a tiny world and model, for smoke tests (under 3 minutes)")
    p.add_argument("--retrain", action="store_true", help="train the model instead of using the shipped checkpoint")
    p.add_argument("--out", type=Path, default=Path("runs"), help="where the run's forecasts, scores and report go")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_args(p, "default configs/small.yaml (configs/tiny.yaml with --quick); "
                        "another runs into OUT/demo-<name>, e.g. configs/small-long.yaml")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("world", help="run the physics world (dinosaur, Held-Suarez) and archive it in ERA5 schema")
    p.add_argument("--out", type=Path, required=True, help="output zarr path")
    p.add_argument("--years", type=float, help="archived length in years (config world.years)")
    p.add_argument("--seed", type=int, help="random seed of the initial perturbation (config world.seed)")
    p.add_argument("--resolution", help="spectral truncation of the truth run, e.g. T21, T42 (config world.resolution)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(p)
    p.set_defaults(func=cmd_world)

    p = sub.add_parser("world-wb2", help="a short truth run of a physics world archived on a WeatherBench 2 grid "
                                         "(1.5 or 0.25 deg with poles, 13 levels) in WB2's layout and names")
    p.add_argument("world", help="a world store of `weatherens world` (its saved states start the run)")
    p.add_argument("--out", type=Path, required=True, help="output zarr path (zarr v2, consolidated, as WB2)")
    p.add_argument("--grid", default="1.5", help="1.5 (240x121), 0.25 (1440x721), 5.625 (64x33) or NLONxNLAT")
    p.add_argument("--days", type=float, default=10.0, help="archived days (default 10)")
    p.add_argument("--start", help="a saved state's time (default: the world's first)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_world_wb2)

    p = sub.add_parser("inspect", help="open a store as the loader sees it and say whether it can serve as training data")
    p.add_argument("store", help="local path or fsspec URL (zarr or netCDF)")
    p.add_argument("--variables", nargs="*", help="variables to select (short or long names)")
    p.add_argument("--timestep-hours", type=int, default=6, help="model time step to check against (default 6)")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("verify", help="score WeatherBench-2-format forecasts against a truth (CRPS, RMSE, SSR, ACC, spectra)")
    p.add_argument("--forecast", action="append", required=True, help="forecast zarr (repeat for several)")
    p.add_argument("--name", action="append", help="a label per forecast (default: the file stem)")
    p.add_argument("--truth", required=True, help="truth store (ERA5, WB2 ERA5 or a physics world)")
    p.add_argument("--out", type=Path, required=True, help="scores netCDF (with several forecasts: OUT.<name>.nc)")
    p.add_argument("--climatology", help="climatology store for ACC (WB2 dayofyear/hour layout); default: truth time mean")
    p.add_argument("--variables", nargs="+", help="variables to score (default: all of the forecast's)")
    p.add_argument("--regions", nargs="+", help="regions (default: global tropics extratropics_nh extratropics_sh)")
    p.add_argument("--thresholds", nargs="+", help="Brier thresholds: values (273.15) or truth quantiles (q0.9)")
    p.add_argument("--metrics", nargs="+",
                   help="compute only these of crps crps_fair rmse spread ssr ssr_debiased acc rank_histogram "
                        "spectra (default: all); e.g. crps_fair rmse spread skips the ecdf CRPS, ACC, rank "
                        "histograms and spectra")
    p.add_argument("--plots", type=Path, help="write PNG figures to this folder")
    p.add_argument("--baseline", help="the forecast name the scorecard compares against (default: the second)")
    p.add_argument("--scheduler", help="dask.distributed scheduler address, e.g. tcp://10.0.0.1:8786")
    p.add_argument("--seed", type=int, default=0, help="seed for breaking rank ties (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("forecast", help="ensemble hindcast from trained checkpoints, WB2 zarr (resumes)")
    p.add_argument("--checkpoint", nargs="+", required=True, metavar="WORKDIR",
                   help="training workdir(s); several share the members (a multi-checkpoint ensemble)")
    p.add_argument("--data", required=True, help="store with the initial states (ERA5 schema)")
    p.add_argument("--members", type=int, help="ensemble size M (default: config demo.members)")
    p.add_argument("--perturbation", choices=config_mod.PERTURBATIONS,
                   help="initial-condition perturbations (default: config demo.perturbation, 'none': model noise only)")
    p.add_argument("--amplitude", type=float, default=0.05,
                   help="perturbation size in units of each channel's std (default 0.05)")
    p.add_argument("--breeding-cycles", type=int, default=4, help="model steps of breeding for --perturbation bred")
    p.add_argument("--lead-chunk", type=int, default=4, help="steps per device call; output streamed per chunk")
    p.add_argument("--member-chunk", type=int, default=256, help="members per pass (bounds memory)")
    _add_forecast_args(p)
    _add_config_args(p, "its demo section gives the defaults of --members and --perturbation")
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("baseline", help="persistence, climatological or physics ensembles in the same format")
    p.add_argument("--kind", choices=("persistence", "climatology", "archived", "limit", "perfect"), required=True,
                   help="persistence; climatology (training-years trajectories); archived (the operational analogue: "
                        "dinosaur at --resolution from the analysis of the archived fields, perturbed with the "
                        "archive's analysis errors); limit (the predictability limit: the world's own model from the "
                        "same analysis and perturbations); perfect (a diagnostic of intrinsic predictability: the "
                        "world's model from its exact saved state plus white noise)")
    p.add_argument("--data", help="the truth store (a physics world for archived/limit/perfect); default config data.store")
    p.add_argument("--resolution", help="archived: the model's truncation (default: config demo.analogue_resolution)")
    p.add_argument("--timestep-minutes", type=float,
                   help="archived: the model's time step (default: config demo.analogue_timestep_minutes at that "
                        "resolution, else the world's Courant number)")
    p.add_argument("--perturbation-scale", type=float,
                   help="archived/limit: x the analysis-error perturbations learnt on the config's train split "
                        "(default: config demo.analogue_scale / demo.limit_scale, the demo's tuned values)")
    p.add_argument("--model-error-scale", type=float,
                   help="archived: x the model's own 6-h errors added every interval (default: config "
                        "demo.analogue_model_error_scale; 0: none)")
    p.add_argument("--amplitude-k", type=float, default=0.1, help="perfect: white-noise temperature std in K")
    p.add_argument("--members", type=int, default=1, help="ensemble size (not for persistence)")
    p.add_argument("--window-days", type=float, default=None,
                   help="climatology: days of year around the init's to draw from (default: all training times)")
    _add_forecast_args(p)
    _add_config_args(p)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("train", help="train the stochastic forecaster with the fair CRPS (resumes from the workdir)")
    p.add_argument("--data", help="training store path or URL (default: config data.store)")
    p.add_argument("--workdir", type=Path, required=True, help="run folder: checkpoints, stats.nc, metrics.jsonl")
    p.add_argument("--coordinator", help="host:port of process 0 for multi-process training (jax.distributed)")
    p.add_argument("--num-processes", type=int, default=1, help="processes training together (default 1)")
    p.add_argument("--process-id", type=int, default=0, help="this process's index (0 .. num-processes - 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("stats", help="normalization statistics of the training split (one dask pass), saved and reused")
    p.add_argument("--data", help="store path or URL (default: config data.store)")
    p.add_argument("--out", type=Path, required=True, help="netCDF file to write (reused when it matches the data)")
    _add_config_args(p)
    p.set_defaults(func=cmd_stats)
    return parser


def _logging(verbose: bool) -> None:
    """The library's loggers (`weatherens.*`, quiet by default) to stderr: warnings, and with -v progress notes."""
    logger = logging.getLogger("weatherens")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    if not any(getattr(h, "_weatherens", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("weatherens %(message)s"))
        setattr(handler, "_weatherens", True)  # marks ours (not a Handler attribute)
        logger.addHandler(handler)


def _written(args: argparse.Namespace) -> Path | None:
    """What the command writes, locked while it runs (None: nothing, or not this process's to lock)."""
    if args.command == "train":
        return args.workdir if args.process_id == 0 else None
    if args.command in ("world", "forecast", "baseline", "verify", "stats"):
        return args.out
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _logging(args.verbose)
    try:
        target = _written(args)
        if target is None:
            return args.func(args)
        from weatherens import files

        with files.lock(target):
            return args.func(args)
    except (WeatherensError, FileNotFoundError, FileExistsError) as err:
        if args.debug:
            raise
        print(f"weatherens {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
