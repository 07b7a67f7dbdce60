"""Tune the analysis-error perturbation scale of the physics ensembles on validation inits.

    python scripts/tune_physics_ensembles.py --world WORLD.zarr --kind archived --scales 1 1.5 2 \
        [--config configs/small.yaml] [--set demo.analogue_resolution=T21 ...] [--members 8] [--inits 6] \
        [--lead-hours 120] [--out runs/tune]

For each scale: the ensemble (`archived`: the operational analogue, `limit`: the predictability
limit) from `--inits` init times spread over the config's validation split (every
demo.init_every_hours), verified against the world (z500, t850, 2 m temperature, global); prints
the debiased spread-skill ratio and the fair CRPS per day, and the mean SSR over days 2-5, the
window operational centres tune their initial perturbations on. Forecasts and scores stay in
--out, so a second run with more scales reuses them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from weatherens import config
from weatherens.demo import SCORECARD_CHANNELS
from weatherens.world import ensembles
from weatherens.verify import evaluation


def validation_inits(world: Path, exp: config.Experiment, n: int, lead_hours: int) -> np.ndarray:
    times = xr.open_zarr(world)["time"].values
    start, end = np.datetime64(exp.data.validation.start, "ns"), np.datetime64(exp.data.validation.end, "ns")
    step = np.timedelta64(exp.demo.init_every_hours, "h")
    candidates = np.arange(start, end, step)
    ok = np.isin(candidates, times) & (candidates + np.timedelta64(lead_hours, "h") <= min(end, times[-1]))
    return candidates[ok][:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--kind", choices=("archived", "limit"), required=True)
    p.add_argument("--scales", type=float, nargs="+", required=True)
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "small.yaml")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--inits", type=int, default=6)
    p.add_argument("--lead-hours", type=int, default=120)
    p.add_argument("--out", type=Path, default=Path("runs/tune"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override, e.g. demo.analogue_resolution=T21 (repeatable)")
    args = p.parse_args()
    exp = config.load(args.config, args.overrides)
    inits = validation_inits(args.world, exp, args.inits, args.lead_hours)
    print(f"{len(inits)} validation inits: {', '.join(str(np.datetime64(t, 'h')) for t in inits)}")
    args.out.mkdir(parents=True, exist_ok=True)
    days = [h for h in range(24, args.lead_hours + 1, 24)]
    print("| scale | channel | " + " | ".join(f"SSR {h // 24} d" for h in days) + " | SSR 2-5 d | "
          + " | ".join(f"CRPS {h // 24} d" for h in days) + " |")
    for scale in args.scales:
        d = exp.demo
        model = (f"{d.analogue_resolution}-{d.analogue_timestep_minutes:g}min-q{d.analogue_model_error_scale:g}-"
                 if args.kind == "archived" else "")
        name = f"{args.kind}-{model}x{scale:g}-m{args.members}-{args.lead_hours}h"
        path = args.out / f"{name}.zarr"
        if not path.exists():
            kw = dict(perturbation_scale=scale, error_span=exp.data.train, progress=True)
            if args.kind == "archived":
                ensembles.archived_fields_ensemble(args.world, inits, args.members, args.lead_hours, path,
                                                          resolution=exp.demo.analogue_resolution,
                                                          timestep_minutes=exp.demo.analogue_timestep_minutes,
                                                          model_error_scale=exp.demo.analogue_model_error_scale, **kw)
            else:
                ensembles.predictability_limit_ensemble(args.world, inits, args.members, args.lead_hours, path, **kw)
        scores_file = args.out / f"{name}.nc"
        if not scores_file.exists():
            evaluation.verify([str(path)], str(args.world), scores_file, names=[name], regions=("global",),
                              variables=[v for v, _ in SCORECARD_CHANNELS], spectra_of=[], progress=False)
        scores = xr.load_dataset(scores_file)
        for variable, level in SCORECARD_CHANNELS:
            da = scores[variable].sel(region="global")
            if level is not None:
                da = da.sel(level=level)
            pick = lambda metric, h: float(da.sel(metric=metric, lead_time=np.timedelta64(h, "h")))  # noqa: E731
            ssr = [pick("ssr_debiased", h) for h in days]
            window = np.mean([pick("ssr_debiased", h) for h in range(48, min(120, args.lead_hours) + 1, 6)])
            label = f"{variable}@{level}" if level else variable
            print(f"| {scale:g} | {label} | " + " | ".join(f"{x:.2f}" for x in ssr) + f" | {window:.2f} | "
                  + " | ".join(f"{pick('crps_fair', h):.4g}" for h in days) + " |", flush=True)


if __name__ == "__main__":
    main()
