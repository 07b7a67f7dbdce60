#!/usr/bin/env python3
"""Ensemble inference: throughput against members and devices, peak memory against lead and members,
and the cost of an ML member-day against a physics-ensemble member-day, measured in one run.

    python scripts/bench_infer.py --checkpoint RUN --data WORLD.zarr [--members 1 10 100 1000]
        [--devices 1 2 8] [--leads 24 120 240] [--huge 1000] [--cost-members 10]

1. member-steps/s of `EnsembleRunner.rollout` for each (forced host devices, members), one init,
   after a warm-up with the same shapes (compilation excluded), each in its own process.
2. peak RSS of a whole `weatherens forecast` (one init, writing zarr) against lead time (50 members)
   and members (at the longest lead), each in its own process: flat in lead means the trajectory is
   streamed out, linear in members with a small slope means the member chunks bound memory.
3. the huge ensemble: --huge members of a 10-day forecast, wall time and peak RSS.
4. cost per member-day: the ML ensemble (one device) against the physics ensemble from archived fields
   (`world.ensembles.archived_fields_ensemble`, T21), same members and init, writing included and
   start-up excluded (3-day minus 1-day forecast), and the ratio.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def throughput(checkpoint_path: str, members: int, steps: int) -> dict:
    """member-steps/s of `EnsembleRunner.rollout` from one constant state, compilation excluded."""
    import numpy as np

    from weatherens import checkpoint
    from weatherens.infer import ensemble

    predictor, params, _ = checkpoint.load_for_inference(checkpoint_path)
    runner = ensemble.EnsembleRunner(predictor, params, lead_chunk=steps)
    c = len(predictor.channels)
    x = np.asarray(predictor.mean).reshape(c, 1, 1) * np.ones((c, predictor.lat.size, predictor.lon.size), np.float32)
    f = np.zeros((steps + 2, len(predictor.forcings)) + x.shape[1:], np.float32)
    keys = ensemble.member_keys(ensemble.init_key(0, np.datetime64("2000-06-01")), np.arange(members))
    for _ in runner.rollout(x, x, f, keys, steps):  # compile
        pass
    t = time.perf_counter()
    for _ in runner.rollout(x, x, f, keys, steps):
        pass
    return {"member_steps_s": members * steps / (time.perf_counter() - t)}


def whole_forecast(checkpoint_path: str, data: str, init: str, members: int, lead_hours: int, out: str,
                   member_chunk: int) -> dict:
    """Wall time and peak RSS of one `weatherens forecast` (one init, writing zarr)."""
    from weatherens.infer import forecast

    t = time.perf_counter()
    forecast.forecast([checkpoint_path], data, forecast.parse_init_times([init]), members, lead_hours, out,
                      progress=False, member_chunk=member_chunk)
    return {"wall_s": time.perf_counter() - t, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def member_day_cost(kind: str, checkpoint_path: str, data: str, init: str, members: int, tmp: str) -> dict:
    """Seconds per member-day of the ML ensemble (kind 'ml') or the physics ensemble from archived fields:
    a 3-day minus a 1-day forecast after a warm-up, writing included."""
    from weatherens.infer import forecast
    from weatherens.world import ensembles

    inits = forecast.parse_init_times([init])

    def run(hours: int, name: str) -> float:
        t = time.perf_counter()
        if kind == "ml":
            forecast.forecast([checkpoint_path], data, inits, members, hours, f"{tmp}/{kind}-{name}.zarr",
                              progress=False)
        else:
            ensembles.archived_fields_ensemble(data, inits, members, hours, f"{tmp}/{kind}-{name}.zarr",
                                               progress=False)
        return time.perf_counter() - t

    first = run(24, "warm")
    one, three = run(24, "one"), run(72, "three")
    return {"first_s": first, "member_day_s": (three - one) / (2 * members)}


CHILDREN = {"throughput": throughput, "forecast": whole_forecast, "cost": member_day_cost}


def child(name: str, *args, devices: int = 1) -> dict:
    """Run CHILDREN[name](*args) in a fresh process with `devices` forced host devices (XLA_FLAGS must be set
    before jax is imported); its JSON result."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    res = subprocess.run([sys.executable, __file__, "--child", name, *map(str, args)], capture_output=True, text=True,
                         env=env)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_child(argv: list[str]) -> None:
    """`--child NAME ARGS...`: call CHILDREN[NAME] with ARGS converted to its annotated types; print JSON."""
    fn = CHILDREN[argv[0]]
    types = [p.annotation for p in inspect.signature(fn).parameters.values()]
    print(json.dumps(fn(*(int(a) if t in (int, "int") else a for a, t in zip(argv[1:], types)))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--init", default="2000-06-05T00")
    ap.add_argument("--members", type=int, nargs="+", default=[1, 10, 100, 1000])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 8])
    ap.add_argument("--steps", type=int, default=8, help="steps per throughput measurement")
    ap.add_argument("--leads", type=int, nargs="+", default=[24, 120, 240])
    ap.add_argument("--memory-members", type=int, nargs="+", default=[10, 100, 300])
    ap.add_argument("--huge", type=int, default=1000)
    ap.add_argument("--cost-members", type=int, default=10, help="members of the cost-per-member-day runs")
    args = ap.parse_args()

    print("1. member-steps/s (one init, compilation excluded)")
    print(f"{'devices':>8}" + "".join(f"{m:>10}" for m in args.members))
    rates = {}
    for d in args.devices:
        row = []
        for m in args.members:
            steps = args.steps if m < 1000 else max(2, args.steps // 4)
            rates[d, m] = child("throughput", args.checkpoint, m, steps, devices=d)["member_steps_s"]
            row.append(rates[d, m])
        print(f"{d:>8}" + "".join(f"{r:>10.1f}" for r in row), flush=True)
    base = args.devices[0]
    print(f"ratios: against {base} device(s) at the same members; against {args.members[0]} member(s) on {base}")
    for d in args.devices[1:]:
        print(f"{d:>8}" + "".join(f"{rates[d, m] / rates[base, m]:>10.2f}" for m in args.members))
    print(f"{'batching':>8}" + "".join(f"{rates[base, m] / rates[base, args.members[0]]:>10.2f}" for m in args.members))

    with tempfile.TemporaryDirectory() as tmp:
        print("\n2. peak RSS of a whole forecast (one init)")
        print(f"{'members':>8}{'lead h':>8}{'wall s':>9}{'peak RSS MiB':>14}")
        for m, lead in [(50, h) for h in args.leads] + [(m, max(args.leads)) for m in args.memory_members]:
            r = child("forecast", args.checkpoint, args.data, args.init, m, lead, Path(tmp) / f"f{m}-{lead}.zarr", 256)
            print(f"{m:>8}{lead:>8}{r['wall_s']:>9.1f}{r['peak_rss_mib']:>14.0f}", flush=True)

        print(f"\n3. huge ensemble: {args.huge} members x 10 days")
        r = child("forecast", args.checkpoint, args.data, args.init, args.huge, 240, Path(tmp) / "huge.zarr", 256)
        print(f"   wall {r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min), peak RSS {r['peak_rss_mib']:.0f} MiB; "
              f"{args.huge * 40 / r['wall_s']:.0f} member-steps/s including writing", flush=True)

        m = args.cost_members
        print(f"\n4. cost per member-day ({m} members, one device, writing included, start-up excluded:"
              " the difference between a 3-day and a 1-day forecast)")
        ml = child("cost", "ml", args.checkpoint, args.data, args.init, m, tmp)
        print(f"   ML ensemble: {ml['member_day_s'] * 1e3:.1f} ms per member-day (first call {ml['first_s']:.0f} s)",
              flush=True)
        try:
            ph = child("cost", "physics", args.checkpoint, args.data, args.init, m, tmp)
            print(f"   physics ensemble from archived fields (dinosaur T21/8 layers): {ph['member_day_s'] * 1e3:.1f} ms"
                  f" per member-day (first call {ph['first_s']:.0f} s); physics / ML = "
                  f"{ph['member_day_s'] / ml['member_day_s']:.2f}")
        except RuntimeError as err:
            print(f"   physics ensemble not measured: {str(err).splitlines()[-1]}")
    print(f"\nmax RSS of this script's children: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        run_child(sys.argv[2:])
    else:
        main()
