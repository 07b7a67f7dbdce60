"""Per-init paired comparison of two ensembles' global fair CRPS (is the scorecard's ratio real?).

    python scripts/paired_skill.py --a runs/demo-small-long/forecasts/weatherens.zarr \
        --b runs/demo-small-long/forecasts/climatology.zarr --truth WORLD.zarr \
        --channels geopotential@500 temperature@850 --leads 24 72 120

prints, per channel and lead, the ratio of mean CRPS (the scorecard's), in how many inits a is
better, the mean difference with its standard error and the paired t (weatherens.verify.paired).
"""

from __future__ import annotations

import argparse

import numpy as np
import xarray as xr

from weatherens.verify import paired


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, help="forecast zarr (WB2 layout), the candidate")
    p.add_argument("--b", required=True, help="forecast zarr on the same inits, the reference")
    p.add_argument("--truth", required=True, help="truth store holding every valid time")
    p.add_argument("--channels", nargs="+", default=["geopotential@500", "temperature@850"])
    p.add_argument("--leads", nargs="+", type=int, default=[24, 72, 120], help="lead times in hours")
    args = p.parse_args()
    a, b, truth = xr.open_zarr(args.a), xr.open_zarr(args.b), xr.open_zarr(args.truth)
    if not np.array_equal(a["time"].values, b["time"].values):
        raise SystemExit(f"{args.a} and {args.b} have different init times: the comparison must be paired")
    print("| channel | lead | ratio of means | a better in | mean difference ± 1 s.e. | paired t |")
    print("|---|---|---|---|---|---|")
    for channel in args.channels:
        variable, _, level = channel.partition("@")
        for hours in args.leads:
            lead = np.timedelta64(hours, "h")
            s = [paired.per_init_crps_fair(ds, truth, variable, int(level) if level else None, lead) for ds in (a, b)]
            r = paired.paired_difference(*s)
            print(f"| {channel} | {hours} h | {r.ratio_of_means:.4f} | {r.a_better} / {r.n} | "
                  f"{r.mean:.4g} ± {r.standard_error:.3g} | {r.t:.2f} |")


if __name__ == "__main__":
    main()
