#!/usr/bin/env python3
"""Pointwise ensemble-CRPS throughput and memory against the usual Python references, in one run.

    python scripts/bench_verify.py [--members 10 50 200 1000] [--leads 10] [--min-seconds 1.0]
    python scripts/bench_verify.py --end-to-end [bench_verify_e2e.py's options]

--end-to-end runs `weatherens verify` as a whole command against a plain xarray + scores script on
stores of three chunk layouts instead (scripts/bench_verify_e2e.py, which documents it).

Input: a WeatherBench-2-layout float32 forecast (prediction_timedelta, number, latitude, longitude)
with --leads x 32 x 64 points and M members, and a float32 truth (prediction_timedelta, latitude,
longitude); every implementation returns the CRPS at every point (no reduction), from numpy-backed
DataArrays (properscoring: the same numpy arrays, member axis 1). Two estimators:

  fair   ours `crps_fair`     vs scores `crps_for_ensemble(method="fair")`
  ecdf   ours `crps_ecdf`     vs scores `crps_for_ensemble(method="ecdf")`, properscoring
         `crps_ensemble` (numba gufunc if numba is installed, which this script reports),
         properscoring's numpy fallback `_crps_ensemble_vectorized` (what runs without numba;
         O(M^2) memory, so only up to --vectorized-max-members), and xskillscore `crps_ensemble`
         (properscoring under xr.apply_ufunc)

Each (implementation, M) runs in its own subprocess: one warm-up call, then calls until
--min-seconds have passed (at least 3); the median ms per call is reported. max |err| is the largest
difference from the same estimator computed by scores in float64 from the float32 members cast to
float64 (scores itself works in the input's float32; ours sorts in float32, which is exact, and
accumulates in float64; the tests check ours against O(M^2) loops to 1e-12). Memory is the peak of
allocations during one further call above what was allocated before it (tracemalloc, which numpy
and numba-allocated numpy arrays report to), so the input arrays themselves are not counted; the
input size is printed for scale (ours: two block buffers, 0.75 MiB up to M = 256, then 3 KiB per
member, plus the output; the others hold several full-size temporaries). Ratios are ms / ms of the fastest reference of the same estimator
(< 1: ours is faster). Needs `pip install properscoring xskillscore` (benchmark only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

CASES = {
    "ours_fair": "fair",
    "scores_fair": "fair",
    "ours_ecdf": "ecdf",
    "scores_ecdf": "ecdf",
    "properscoring": "ecdf",
    "properscoring_vectorized": "ecdf",
    "xskillscore": "ecdf",
}


def make_data(members: int, leads: int):
    import xarray as xr

    rng = np.random.default_rng(0)
    shape = (leads, members, 32, 64)
    dims = ("prediction_timedelta", "number", "latitude", "longitude")
    forecast = xr.DataArray(rng.standard_normal(shape, dtype=np.float32), dims=dims)
    truth = xr.DataArray(rng.standard_normal((leads, 32, 64), dtype=np.float32), dims=dims[:1] + dims[2:])
    return forecast, truth


def make_call(case: str, forecast, truth):
    if case.startswith("ours"):
        from weatherens.verify import metrics

        fn = metrics.crps_fair if case == "ours_fair" else metrics.crps_ecdf
        return lambda: fn(forecast, truth, "number")
    if case.startswith("scores"):
        from scores.probability import crps_for_ensemble

        method = case.split("_")[1]
        return lambda: crps_for_ensemble(forecast, truth, "number", method=method, preserve_dims="all")
    if case == "properscoring":
        import properscoring

        f, t = forecast.values, truth.values
        return lambda: properscoring.crps_ensemble(t, f, axis=1)
    if case == "properscoring_vectorized":
        from properscoring._crps import _crps_ensemble_vectorized

        f, t = forecast.values, truth.values  # what crps_ensemble does before calling it without numba
        def call():
            fs = np.sort(np.moveaxis(f, 1, -1), axis=-1)
            return _crps_ensemble_vectorized(t, fs, np.ones_like(fs))

        return call
    if case == "xskillscore":
        import xskillscore

        return lambda: xskillscore.crps_ensemble(truth, forecast, member_dim="number", dim=[])
    raise ValueError(case)


def run_case(case: str, members: int, leads: int, min_seconds: float) -> dict:
    forecast, truth = make_data(members, leads)
    call = make_call(case, forecast, truth)
    result = np.asarray(call())  # warm-up (numba compilation, imports)
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    call()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    # accuracy: against scores' same estimator on the float64-cast input, an independent implementation
    from scores.probability import crps_for_ensemble

    f64, t64 = forecast.astype(np.float64), truth.astype(np.float64)
    exact = crps_for_ensemble(f64, t64, "number", method=CASES[case], preserve_dims="all")
    error = float(np.max(np.abs(result - exact.transpose(*truth.dims).values)))
    return {"ms": 1e3 * statistics.median(times), "peak_mb": peak / 2**20, "error": error}


def skip_reason(case: str, members: int, args) -> str | None:
    if case == "properscoring_vectorized" and members > args.vectorized_max_members:
        return f"O(M^2) memory: about {4 * args.leads * 2048 * members**2 * 4 / 2**30:.0f} GiB"
    if case in ("properscoring", "xskillscore"):
        try:
            import numba  # noqa: F401
        except ImportError:  # then properscoring is the O(M^2) fallback too
            if members > args.vectorized_max_members:
                return "no numba: O(M^2) fallback"
    return None


def main() -> None:
    if "--end-to-end" in sys.argv:
        sys.argv.remove("--end-to-end")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_verify_e2e

        bench_verify_e2e.main()
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[10, 50, 200, 1000])
    parser.add_argument("--leads", type=int, default=10)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--vectorized-max-members", type=int, default=50)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # child process: one measurement, JSON on stdout
        case, members = args.case.split(":")
        print(json.dumps(run_case(case, int(members), args.leads, args.min_seconds)))
        return

    try:
        import numba

        numba_note = f"numba {numba.__version__}: properscoring uses its numba gufunc"
    except ImportError:
        numba_note = "no numba: properscoring runs its O(M^2) numpy fallback"
    points = args.leads * 32 * 64
    print(f"{points} points ({args.leads} leads x 32 x 64), float32 input; {numba_note}; numpy {np.__version__}")
    header = (f"{'M':>5} {'input MB':>8}  {'implementation':<26}{'est':<5}{'ms/call':>9}{'x best ref':>11}"
              f"{'peak MB':>9}{'max |err|':>11}")
    print(header)
    print("-" * len(header))
    for members in args.members:
        rows = {}
        for case in args.cases:
            reason = skip_reason(case, members, args)
            if reason:
                rows[case] = reason
                continue
            cmd = [sys.executable, __file__, "--case", f"{case}:{members}", "--leads", str(args.leads),
                   "--min-seconds", str(args.min_seconds)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            rows[case] = json.loads(proc.stdout.splitlines()[-1]) if proc.returncode == 0 else (
                "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:60])
        best = {}
        for case, row in rows.items():
            if isinstance(row, dict) and not case.startswith("ours"):
                est = CASES[case]
                best[est] = min(best.get(est, np.inf), row["ms"])
        input_mb = points * (members + 1) * 4 / 2**20
        for case, row in rows.items():
            est = CASES[case]
            if isinstance(row, dict):
                ratio = row["ms"] / best[est] if est in best else float("nan")
                print(f"{members:>5} {input_mb:>8.1f}  {case:<26}{est:<5}{row['ms']:>9.1f}{ratio:>11.2f}"
                      f"{row['peak_mb']:>9.1f}{row['error']:>11.1e}")
            else:
                print(f"{members:>5} {input_mb:>8.1f}  {case:<26}{est:<5}  skipped ({row})")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
