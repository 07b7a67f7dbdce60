#!/usr/bin/env python3
"""Two physics ensembles at once on one machine: both processes free to use every CPU, against each pinned
to half of the CPUs (what `weatherens demo` does in its stage 3-5), measured in one run.

    python scripts/bench_pinning.py --world WORLD.zarr [--inits 2] [--config configs/small.yaml]

Each round starts the predictability limit and the operational analogue (the demo's settings, from
`--inits` inits every 60 h from the test split's start, 10 days) in two fresh processes and waits for
both; the pinned round sets each child's CPU affinity before its first JAX computation, so XLA sizes its
thread pool to its half. Prints each process's wall and CPU seconds, each round's wall, the ratio, and
whether the pinned members equal the unpinned ones bitwise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensemble(kind: str, world: str, config_path: str, inits: int, out: str, cpus: str) -> dict:
    """Child: the demo's limit or analogue (`demo.make_forecast`) from `inits` inits every init_every_hours
    from the test split's start, pinned to the CPUs listed in `cpus` when given."""
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    import numpy as np

    from weatherens import config, demo

    exp = config.load(config_path)
    start = np.datetime64(exp.data.test.start, "h")
    times = (start + np.arange(inits) * np.timedelta64(exp.demo.init_every_hours, "h")).astype("M8[ns]")
    t = time.perf_counter()
    name = "physics_limit" if kind == "limit" else "physics_analogue"
    demo.make_forecast(name, exp, Path(world), Path(), times, Path(out), progress=False)  # no checkpoint needed
    use = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": time.perf_counter() - t, "cpu_s": use.ru_utime + use.ru_stime}


def round_of_two(args, tmp: Path, pinned: bool) -> tuple[float, dict]:
    from weatherens import demo

    halves = [sorted(h) for h in demo.cpu_halves() or ((), ())] if pinned else [[], []]
    t = time.perf_counter()
    procs = {kind: subprocess.Popen([sys.executable, __file__, "--child", kind, args.world, args.config,
                                     str(args.inits), str(tmp / f"{kind}-{pinned}.zarr"), ",".join(map(str, half))],
                                    stdout=subprocess.PIPE, text=True)
             for kind, half in zip(("limit", "analogue"), halves)}
    results = {}
    for kind, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"{kind} failed")
        results[kind] = json.loads(out.strip().splitlines()[-1])
    return time.perf_counter() - t, results


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        kind, world, config_path, inits, out, cpus = sys.argv[2:8]
        print(json.dumps(ensemble(kind, world, config_path, int(inits), out, cpus)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--config", default=str(ROOT / "configs" / "small.yaml"))
    parser.add_argument("--inits", type=int, default=2)
    args = parser.parse_args()
    print(f"{len(os.sched_getaffinity(0))} CPUs; limit and analogue from {args.inits} init(s), 10 days, at once")
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pinned in (False, True):
            walls[pinned], res = round_of_two(args, Path(tmp), pinned)
            label = "pinned to halves" if pinned else "unpinned"
            print(f"{label:>17}: both {walls[pinned]:6.1f} s;"
                  + "".join(f"  {k} {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU;" for k, r in res.items()),
                  flush=True)
            if pinned:
                for kind in ("limit", "analogue"):
                    print(f"{kind}: pinned members {same_members(Path(tmp) / f'{kind}-False.zarr', Path(tmp) / f'{kind}-True.zarr')}")
    print(f"pinned / unpinned wall: {walls[True] / walls[False]:.2f}")


def same_members(a: Path, b: Path) -> str:
    """'bitwise equal to the unpinned ones', or the largest absolute difference per variable."""
    import numpy as np
    import xarray as xr

    x, y = xr.open_zarr(a), xr.open_zarr(b)
    diffs = {v: float(np.abs(x[v].values - y[v].values).max()) for v in x.data_vars if x[v].dtype.kind == "f"}
    if not any(diffs.values()):
        return "bitwise equal to the unpinned ones"
    return "differ from the unpinned ones by up to " + ", ".join(f"{v} {d:.3g}" for v, d in diffs.items() if d)


if __name__ == "__main__":
    main()
