#!/usr/bin/env python3
"""Bitwise reproducibility check: SHA-256 digests of the quick world, a tiny forecast and its scores.

    .venv/bin/python scripts/check_reproducibility.py                 # digests, then a rerun under other XLA flags
    .venv/bin/python scripts/check_reproducibility.py --digest-only --json here.json
    .venv/bin/python scripts/check_reproducibility.py --compare machine1.json machine2.json

Stages (each a `weatherens` subprocess, so that XLA_FLAGS apply to it alone):
  world     `weatherens world --config configs/quick.yaml` (120-day spin-up, 18 archived days, T21)
  forecast  `weatherens forecast --checkpoint checkpoints/tiny`, 2 inits x 4 members x 48 h, from that world
  verify    `weatherens verify` of that forecast against that world
The digests are of the raw array bytes (float32 fields, float64 scores; not of file bytes, which
hold paths and codec details), so two machines that print the same digest computed the same bits.
Run it on two machines, save `--json`, and `--compare` the files. To test one stage alone on the
second machine, copy the first machine's world (and forecast) over and pass `--world` (`--forecast`).

Without --digest-only the same stages are rerun here with `--alt-xla-flags` (default
`--xla_cpu_max_isa=AVX`: code generation for a CPU without AVX2/FMA) and/or pinned to `--alt-cpus`,
the forecast and the verification from the *first* run's world and forecast, so each stage is
tested on identical inputs, and a table says which stage came out bitwise equal. Pass
`--alt-xla-flags ''` to test run-to-run reproducibility with identical settings. About 4 to 8
minutes on 2 cores (two world builds); docs/reproducibility.md has the results on the machine it
was written on.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

from weatherens import grid  # numpy only: the in-process checks import no jax

ROOT = Path(__file__).resolve().parents[1]
MARKER = ".check_reproducibility"
INITS = ("2000-01-15T00", "2000-01-16T00")
MEMBERS, LEAD_HOURS = 4, 48
PACKAGES = ("jax", "jaxlib", "numpy", "dinosaur", "xarray", "zarr", "dask", "flax", "scipy", "netCDF4", "weatherens")
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx_vnni", "amx_tile", "amx_bf16")


# ---------------------------------------------------------------------------------------------- environment

def environment() -> dict:
    """What decides the bits: CPU and its ISA, cores, package versions, XLA and BLAS settings."""
    cpu, flags, info = platform.processor() or "?", set(), {}
    try:  # a VM may say only "AMD EPYC": family/model tell the generation (AMD 25/1 Zen 3, 25/17 Zen 4)
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (s.strip() for s in line.partition(":"))
            if key in ("model name", "cpu family", "model", "stepping") and key not in info:
                info[key] = value
            elif key == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    if info:
        cpu = (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}, "
               f"stepping {info.get('stepping', '?')})")
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # numpy's runtime SIMD dispatch
        numpy_simd = sorted(k for k, v in __cpu_features__.items() if v)
    except ImportError:
        numpy_simd = None
    return {
        "machine": platform.machine(), "cpu": cpu, "isa": [f for f in ISA_FLAGS if f in flags],
        "numpy_simd": numpy_simd,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(), "versions": versions,
        "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION",
                                                "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                                                "NPY_DISABLE_CPU_FEATURES") if os.environ.get(k)},
    }


# ---------------------------------------------------------------------------------------------- digests

def _sha(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def _combined(d: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}={v};" for k, v in sorted(d.items())).encode()).hexdigest()


def world_digests(path: Path) -> dict[str, str]:
    ds = xr.open_zarr(path, chunks=None)
    out = {f"world/{k}": _sha(ds[k].values) for k in sorted(ds.data_vars)}
    z500 = ds["geopotential"].sel(level=500)
    n = ds.sizes["time"]
    for i in sorted({0, n // 2, n - 1}):
        out[f"world/z500@{str(ds.time.values[i])[:13]}"] = _sha(z500.isel(time=i).values)
    st = xr.open_zarr(path, group="physics_state", chunks=None)
    out.update({f"world/physics_state/{k}": _sha(st[k].values) for k in sorted(st.data_vars)})
    return out


def forecast_digests(path: Path) -> dict[str, str]:
    ds = xr.open_zarr(path, chunks=None)
    return {f"forecast/{k}": _sha(ds[k].values) for k in sorted(ds.data_vars) if k != "init_complete"}


def scores_digests(path: Path) -> dict[str, str]:
    with xr.open_dataset(path) as ds:  # values only: the attributes hold file paths
        return {f"scores/{k}": _sha(ds[k].values) for k in sorted(ds.data_vars)}


def z500_crps(path: Path) -> dict[str, float]:
    with xr.open_dataset(path) as ds:
        v = ds["geopotential"].sel(metric="crps_fair", region="global", level=500)
        return {f"{int(t / np.timedelta64(1, 'h'))} h": float(v.sel(lead_time=t)) for t in v.lead_time.values}


# ---------------------------------------------------------------------------------------------- stages

def _run(args: list[str], xla_flags: str | None, cpus: set[int] | None, log: Path) -> float:
    env = dict(os.environ)
    if xla_flags is not None:
        env["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), xla_flags) if f)
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "weatherens", *args], env=env, cwd=ROOT, stdout=f,
                            stderr=subprocess.STDOUT, preexec_fn=pin).returncode
    if rc:
        sys.exit(f"check_reproducibility: `weatherens {' '.join(args)}` failed (rc {rc}); see {log}")
    return time.perf_counter() - t0


def build_world(out: Path, config: Path, xla_flags=None, cpus=None) -> float:
    return _run(["world", "--config", str(config), "--out", str(out), "--quiet"], xla_flags, cpus,
                out.with_suffix(".log"))


def run_forecast(out: Path, world: Path, checkpoint: Path, xla_flags=None, cpus=None) -> float:
    return _run(["forecast", "--checkpoint", str(checkpoint), "--data", str(world), "--init-times", *INITS,
                 "--members", str(MEMBERS), "--lead-hours", str(LEAD_HOURS), "--out", str(out), "--quiet"],
                xla_flags, cpus, out.with_suffix(".log"))


def run_verify(out: Path, forecast: Path, world: Path, xla_flags=None, cpus=None) -> float:
    return _run(["verify", "--forecast", str(forecast), "--truth", str(world), "--out", str(out), "--quiet"],
                xla_flags, cpus, out.with_suffix(".log"))


# ---------------------------------------------------------------------------------------------- differences

def world_difference(a: Path, b: Path) -> str:
    """For differing worlds: first differing archived time and the z500 difference then and at the end."""
    za = xr.open_zarr(a, chunks=None)["geopotential"].sel(level=500)
    zb = xr.open_zarr(b, chunks=None)["geopotential"].sel(level=500)
    d = za.values.astype(np.float64) - zb.values
    rms = np.sqrt(grid.area_mean(d**2, za.latitude.values))
    differ = np.flatnonzero(np.abs(d).reshape(len(d), -1).max(1) > 0)
    if not differ.size:
        return "z500 equal (other variables differ)"
    i = differ[0]
    return (f"z500 first differs at archived index {i} ({str(za.time.values[i])[:13]}): RMS diff {rms[i]:.3g}, "
            f"at the end {rms[-1]:.3g} m2 s-2 (independent states differ by ~1e3)")


def forecast_difference(a: Path, b: Path) -> str:
    za = xr.open_zarr(a, chunks=None)["geopotential"].sel(level=500).values.astype(np.float64)
    zb = xr.open_zarr(b, chunks=None)["geopotential"].sel(level=500).values
    per_lead = np.abs(za - zb).max(axis=(0, 2, 3, 4))
    return "z500 max|diff| per 6 h lead: " + " ".join(f"{x:.2g}" for x in per_lead) + " m2 s-2"


def scores_difference(a: Path, b: Path) -> str:
    ca, cb = z500_crps(a), z500_crps(b)
    return "global z500 fair CRPS: " + ", ".join(f"{k} {ca[k]:.6g} vs {cb[k]:.6g}" for k in list(ca)[::3])


# ---------------------------------------------------------------------------------------------- main

def print_digests(title: str, d: dict[str, str]) -> None:
    print(f"\n{title}")
    for k, v in d.items():
        print(f"  {k:42s} {v[:16]}")


def compare_files(a: Path, b: Path) -> int:
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    print(f"A: {a}: {ja['environment']['cpu']}, ISA {' '.join(ja['environment']['isa'])}")
    print(f"B: {b}: {jb['environment']['cpu']}, ISA {' '.join(jb['environment']['isa'])}")
    for k in sorted(set(ja["environment"]["versions"]) | set(jb["environment"]["versions"])):
        va, vb = ja["environment"]["versions"].get(k), jb["environment"]["versions"].get(k)
        if va != vb:
            print(f"  versions differ: {k} {va} vs {vb}")
    if ja["environment"].get("env") != jb["environment"].get("env"):
        print(f"  settings differ: {ja['environment'].get('env')} vs {jb['environment'].get('env')}")
    print(f"\n{'stage':10s} {'bitwise equal':>14s}")
    for stage in ("world", "forecast", "scores"):
        da, db = ja["digests"].get(stage, {}), jb["digests"].get(stage, {})
        if not da or not db:
            print(f"{stage:10s} {'(missing)':>14s}")
            continue
        diff = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
        print(f"{stage:10s} {'yes' if not diff else 'NO':>14s}" + (f"   differ: {', '.join(diff[:6])}" if diff else ""))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "reproducibility",
                   help="where the stores go (default runs/reproducibility; emptied at the start)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "quick.yaml", help="world config (default quick)")
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "tiny", help="forecast checkpoint")
    p.add_argument("--world", type=Path, help="use this world instead of building one (e.g. copied from another machine)")
    p.add_argument("--forecast", type=Path, help="use this forecast (of --world) instead of running one")
    p.add_argument("--digest-only", action="store_true", help="print digests; no rerun under other settings")
    p.add_argument("--alt-xla-flags", default="--xla_cpu_max_isa=AVX",
                   help="XLA_FLAGS added for the rerun (default: --xla_cpu_max_isa=AVX; '' = the same settings)")
    p.add_argument("--alt-cpus", type=lambda s: {int(c) for c in s.split(",")},
                   help="pin the rerun to these CPUs, e.g. 0 (a one-core run)")
    p.add_argument("--json", type=Path, help="write the environment and digests to this file")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                   help="compare two --json files (from two machines) and exit")
    args = p.parse_args()
    if args.compare:
        return compare_files(*args.compare)
    if args.forecast and not args.world:
        p.error("--forecast needs --world (the forecast's truth)")

    work = args.workdir.resolve()
    if work.exists():
        if not (work / MARKER).exists():
            sys.exit(f"check_reproducibility: {work} exists and was not made by this script; choose another --workdir")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("made by scripts/check_reproducibility.py; deleted on its next run\n")

    env = environment()
    print("environment:", json.dumps(env, indent=1))
    timings, digests = {}, {}
    world = args.world.resolve() if args.world else work / "world.zarr"
    if not args.world:
        timings["world"] = build_world(world, args.config.resolve())
    digests["world"] = world_digests(world)
    forecast = args.forecast.resolve() if args.forecast else work / "forecast.zarr"
    if not args.forecast:
        timings["forecast"] = run_forecast(forecast, world, args.checkpoint.resolve())
    digests["forecast"] = forecast_digests(forecast)
    scores = work / "scores.nc"
    timings["verify"] = run_verify(scores, forecast, world)
    digests["scores"] = scores_digests(scores)
    for stage, d in digests.items():
        print_digests(f"{stage}: {_combined(d)[:16]} (combined)", d)
    print("\nglobal z500 fair CRPS:", ", ".join(f"{k} {v:.6g}" for k, v in z500_crps(scores).items()))
    print("seconds:", ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "digests": digests, "combined":
                                         {k: _combined(d) for k, d in digests.items()},
                                         "z500_crps_fair": z500_crps(scores)}, indent=1))
        print(f"written: {args.json}")
    if args.digest_only:
        return 0

    alt = work / "alt"
    alt.mkdir()
    flags, cpus = args.alt_xla_flags, args.alt_cpus
    label = f"XLA_FLAGS+='{flags}'" + (f", CPUs {sorted(cpus)}" if cpus else "")
    print(f"\nrerunning the stages with {label} (forecast and verify from the first run's inputs)")
    rows = []
    if not args.world:
        t = build_world(alt / "world.zarr", args.config.resolve(), flags, cpus)
        d = world_digests(alt / "world.zarr")
        same = d == digests["world"]
        rows.append(("world", same, "" if same else world_difference(world, alt / "world.zarr"), t))
    t = run_forecast(alt / "forecast.zarr", world, args.checkpoint.resolve(), flags, cpus)
    same = forecast_digests(alt / "forecast.zarr") == digests["forecast"]
    rows.append(("forecast", same, "" if same else forecast_difference(forecast, alt / "forecast.zarr"), t))
    t = run_verify(alt / "scores.nc", forecast, world, flags, cpus)
    same = scores_digests(alt / "scores.nc") == digests["scores"]
    rows.append(("verify", same, "" if same else scores_difference(scores, alt / "scores.nc"), t))
    print(f"\n{'stage':10s} {'bitwise equal under ' + label:<50s} seconds  difference")
    for stage, same, what, t in rows:
        print(f"{stage:10s} {'yes' if same else 'NO':<50s} {t:7.0f}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
