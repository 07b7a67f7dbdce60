#!/usr/bin/env python3
"""`weatherens verify` end to end against a plain xarray + scores script, on the same stores, in one run.

    python scripts/bench_verify_e2e.py [--members 100] [--inits 12] [--leads 10] [--repeats 3]
    python scripts/bench_verify_e2e.py --grid 1440x721 --members 50 --inits 2 --leads 2 --variables 1 --repeats 1

Writes a float32 WB2-layout forecast (time, prediction_timedelta, number, latitude, longitude) of
--variables surface variables and its truth (a 6-hourly store covering every valid time) on the
equiangular grid with poles, the forecast in three chunk layouts:

  xarray-default  `to_zarr` without chunks (zarr's own chunk guess)
  per-init        one chunk per init time with all leads and members (as WB2 forecast stores are)
  weatherens      one chunk per init and lead with all members (what `weatherens forecast` writes)

and runs, each as its own command (imports included) and for each layout:

  ours        weatherens verify --metrics crps crps_fair rmse spread (4 regions, per-init scores, netCDF out)
  reference   xarray.open_zarr(chunks={}) + scores: fair and ecdf CRPS (`crps_for_ensemble`), MSE of the
              ensemble mean and the ensemble variance, weighted by cell area (WB2) over the globe per init,
              then the mean over inits (RMSE, spread: square root after), all in one dask.compute

Reported: median wall seconds over --repeats, peak resident memory of the command (ru_maxrss of the
child), and ours / reference (< 1: ours faster). The two agree on the global fair CRPS to 1e-5
(checked, printed). Needs `pip install scores` (in the test extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAYOUTS = ("xarray-default", "per-init", "weatherens")

REFERENCE = r'''
import json, sys
import numpy as np, xarray as xr, dask
from scores.probability import crps_for_ensemble
from scores.continuous import mse
fc, tr, out = sys.argv[1], sys.argv[2], sys.argv[3]
f = xr.open_zarr(fc, chunks={})
t = xr.open_zarr(tr, chunks={})
valid = f["time"] + f["prediction_timedelta"]
lat = f["latitude"].values  # WB2's cell-area weights (sin of the cell bounds), ascending latitudes
bounds = np.concatenate([[-90.0], (lat[1:] + lat[:-1]) / 2, [90.0]])
w = xr.DataArray(np.diff(np.sin(np.deg2rad(bounds))), dims="latitude", coords={"latitude": lat})
results = {}
for v in f.data_vars:
    o = t[v].sel(time=valid)
    x = f[v].chunk(number=-1)  # scores needs the members in one chunk
    dims = ["latitude", "longitude"]
    results[v] = {
        "crps_fair": crps_for_ensemble(x, o, "number", method="fair", reduce_dims=dims, weights=w).mean("time"),
        "crps": crps_for_ensemble(x, o, "number", method="ecdf", reduce_dims=dims, weights=w).mean("time"),
        "rmse": np.sqrt(mse(x.mean("number"), o, reduce_dims=dims, weights=w).mean("time")),
        "spread": np.sqrt(x.var("number", ddof=1).weighted(w).mean(dims).mean("time")),
    }
(results,) = dask.compute(results)
json.dump({v: {k: a.values.tolist() for k, a in m.items()} for v, m in results.items()}, open(out, "w"))
'''


def parse_grid(text: str) -> tuple[int, int]:
    nlon, nlat = (int(n) for n in text.lower().split("x"))
    return nlon, nlat


def write_stores(root: Path, args) -> dict[str, Path]:
    import pandas as pd
    import xarray as xr

    from weatherens import grid

    nlon, nlat = parse_grid(args.grid)
    lat = np.linspace(-90, 90, nlat)
    lon = grid.longitudes(nlon)
    inits = pd.date_range("2000-01-01", periods=args.inits, freq="24h").values
    leads = (np.arange(1, args.leads + 1) * np.timedelta64(6, "h")).astype("timedelta64[ns]")
    times = pd.date_range(inits[0], inits[-1] + leads[-1], freq="6h").values
    rng = np.random.default_rng(0)
    names = [f"var{i}" for i in range(args.variables)]
    truth = xr.Dataset({v: (("time", "latitude", "longitude"),
                            rng.standard_normal((times.size, nlat, nlon), dtype=np.float32)) for v in names},
                       coords={"time": times, "latitude": lat, "longitude": lon})
    truth.to_zarr(root / "truth.zarr", mode="w", encoding={v: {"chunks": (1, nlat, nlon)} for v in names})
    stores = {"truth": root / "truth.zarr"}
    for layout in LAYOUTS:
        path = root / f"fc-{layout}.zarr"
        shape = (args.inits, args.leads, args.members, nlat, nlon)
        first = xr.Dataset(coords={"time": inits, "prediction_timedelta": leads, "number": np.arange(args.members),
                                   "latitude": lat, "longitude": lon})
        chunks = {"xarray-default": None, "per-init": (1, args.leads, args.members, nlat, nlon),
                  "weatherens": (1, 1, args.members, nlat, nlon)}[layout]
        for k, v in enumerate(names):  # one variable at a time: the 0.25 deg forecast need not fit in memory
            data = np.empty(shape, np.float32)
            for i in range(args.inits):
                data[i] = rng.standard_normal(shape[1:], dtype=np.float32)
            ds = first.assign({v: (tuple(first.dims), data)})
            encoding = None if chunks is None else {v: {"chunks": chunks}}
            ds.to_zarr(path, mode="w" if k == 0 else "a", encoding=encoding)
            del data, ds
        stores[layout] = path
    return stores


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS of the child in GiB, stdout) of one command in its own process."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "dt = time.perf_counter() - t; "
               "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
               "print(p.stdout[-2000:], p.stderr[-2000:], file=sys.stderr) if p.returncode else None; "
               "print(dt, rss, p.returncode)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    dt, rss, rc = out.stdout.split()[-3:]
    if int(rc):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return float(dt), int(rss) / 2**20, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--inits", type=int, default=12)
    parser.add_argument("--leads", type=int, default=10)
    parser.add_argument("--variables", type=int, default=2)
    parser.add_argument("--grid", default="64x32", help="NLONxNLAT, equiangular with poles (default 64x32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--no-reference", action="store_true", help="ours only (the reference may not fit in memory)")
    parser.add_argument("--work", type=Path, help="folder for the stores (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        stores = write_stores(root, args)
        size = sum(f.stat().st_size for f in stores["weatherens"].rglob("*") if f.is_file()) / 2**20
        print(f"forecast: {args.inits} inits x {args.leads} leads x {args.members} members x {args.variables} "
              f"variables on {args.grid}, float32, {size:.0f} MiB per layout (written in "
              f"{time.perf_counter() - t0:.0f} s); median of {args.repeats}")
        (root / "ref.py").write_text(REFERENCE)
        header = f"{'layout':<16}{'ours s':>9}{'ours GiB':>10}{'ref s':>9}{'ref GiB':>9}{'ours/ref':>10}{'max |dCRPS|':>13}"
        print(header)
        print("-" * len(header))
        for layout in args.layouts:
            ours_cmd = [sys.executable, "-m", "weatherens", "verify", "--forecast", str(stores[layout]), "--truth",
                        str(stores["truth"]), "--out", str(root / f"s-{layout}.nc"), "--quiet",
                        "--metrics", "crps", "crps_fair", "rmse", "spread"]
            ref_cmd = [sys.executable, str(root / "ref.py"), str(stores[layout]), str(stores["truth"]),
                       str(root / f"r-{layout}.json")]
            ours, ref = [], []
            for _ in range(args.repeats):  # interleaved, so that the machine's drift hits both alike
                ours.append(timed(ours_cmd)[:2])
                if not args.no_reference:
                    ref.append(timed(ref_cmd)[:2])
            o_s, o_gb = statistics.median(x[0] for x in ours), max(x[1] for x in ours)
            line = f"{layout:<16}{o_s:>9.2f}{o_gb:>10.2f}"
            if ref:
                import xarray as xr

                r_s, r_gb = statistics.median(x[0] for x in ref), max(x[1] for x in ref)
                theirs = json.loads((root / f"r-{layout}.json").read_text())
                scores = xr.open_dataset(root / f"s-{layout}.nc")
                diff = max(float(np.max(np.abs(scores[v].sel(metric="crps_fair", region="global").values
                                               - np.asarray(m["crps_fair"])))) for v, m in theirs.items())
                line += f"{r_s:>9.2f}{r_gb:>9.2f}{o_s / r_s:>10.2f}{diff:>13.1e}"
            print(line)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
