#!/usr/bin/env python3
"""Spherical-harmonic round trips (analysis + synthesis): ours against torch-harmonics and dinosaur, one run.

    python scripts/bench_sht.py [--torch-python PATH] [--full] [--repeats 10]

On the equiangular grids with both poles that WeatherBench 2 publishes (32 x 64, 1.5° = 121 x 240,
and with --full 0.25° = 721 x 1440), at the same degree L and number of channels for all three,
float32, on this machine's CPUs: `weatherens.sphere.sht.SphericalHarmonicTransform` (least-squares
analysis), dinosaur's `spherical_harmonic.Grid` (quadrature, `equiangular_with_poles`; both jitted
in JAX) and torch-harmonics' `RealSHT` + `InverseRealSHT` (`grid="equiangular"`, torch with 2
threads, in a subprocess of --torch-python: torch is not a weatherens dependency; left out when
that Python lacks it). Time: the median of --repeats round trips after a warm-up, tables built
beforehand (setup s: building them; for dinosaur, whose Grid builds them lazily, the Grid and its
first jitted synthesis, compilation included). Error: each library synthesises a band-limited field from its own random
coefficients, then max |round trip - field| / max |field|.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from weatherens.sphere.sht import SphericalHarmonicTransform

# (nlat, nlon, degree L, channels): L equal for all three libraries (dinosaur's equiangular quadrature
# is exact only to about nlat / 2, so L stays there)
CASES = [(32, 64, 15, 64), (121, 240, 60, 64)]
FULL_CASES = [(721, 1440, 360, 8)]

_TORCH = r"""
import json, sys, time, numpy as np, torch, torch_harmonics as th
torch.set_num_threads(2)
nlat, nlon, L, c, repeats = map(int, sys.argv[1:6])
t0 = time.perf_counter()
fwd = th.RealSHT(nlat, nlon, lmax=L + 1, mmax=L + 1, grid="equiangular")
inv = th.InverseRealSHT(nlat, nlon, lmax=L + 1, mmax=L + 1, grid="equiangular")
build = time.perf_counter() - t0
g = torch.Generator().manual_seed(0)
coeffs = torch.complex(torch.randn(c, L + 1, L + 1, generator=g), torch.randn(c, L + 1, L + 1, generator=g))
coeffs = torch.tril(coeffs)  # m <= l
coeffs[..., 0] = coeffs[..., 0].real + 0j
with torch.no_grad():
    field = inv(coeffs)
    back = inv(fwd(field))
    for _ in range(2):
        inv(fwd(field))
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); inv(fwd(field)); times.append(time.perf_counter() - t)
err = float((back - field).abs().max() / field.abs().max())
print(json.dumps({"median_s": float(np.median(times)), "error": err, "build_s": build, "version": th.__version__}))
"""


def timed(fn, x, repeats: int) -> float:
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def ours(nlat: int, nlon: int, degree: int, channels: int, repeats: int) -> dict:
    lat = np.linspace(90.0, -90.0, nlat)
    t0 = time.perf_counter()
    sht = SphericalHarmonicTransform(lat, nlon, degree)
    build = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    coeffs = rng.standard_normal((channels, degree + 1, degree + 1)) + 1j * rng.standard_normal((channels, degree + 1, degree + 1))
    coeffs = np.tril(coeffs)  # m <= l
    field = sht.synthesis(jnp.asarray(coeffs, jnp.complex64))
    # the transform as an argument: its tables are not folded into the program as constants
    round_trip = jax.jit(lambda t, f: t.synthesis(t.analysis(f)))
    err = float(jnp.abs(round_trip(sht, field) - field).max() / jnp.abs(field).max())
    return {"median_s": timed(lambda f: round_trip(sht, f), field, repeats), "error": err, "build_s": build}


def dinosaur_sht(nlat: int, nlon: int, degree: int, channels: int, repeats: int) -> dict:
    from dinosaur import spherical_harmonic

    t0 = time.perf_counter()
    grid = spherical_harmonic.Grid(longitude_wavenumbers=degree + 1, total_wavenumbers=degree + 2,
                                   longitude_nodes=nlon, latitude_nodes=nlat,
                                   latitude_spacing="equiangular_with_poles")
    round_trip = jax.jit(lambda f: grid.to_nodal(grid.to_modal(f)))
    modal = jax.random.normal(jax.random.key(0), (channels,) + grid.modal_shape) * grid.mask
    field = jax.jit(grid.to_nodal)(modal)  # (channels, lon, lat)
    build = time.perf_counter() - t0
    err = float(jnp.abs(round_trip(field) - field).max() / jnp.abs(field).max())
    return {"median_s": timed(round_trip, field, repeats), "error": err, "build_s": build}


def torch_sht(python: str, nlat: int, nlon: int, degree: int, channels: int, repeats: int) -> dict | None:
    out = subprocess.run([python, "-c", _TORCH, *map(str, (nlat, nlon, degree, channels, repeats))],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"[torch-harmonics left out: it did not run under {python}: {out.stderr.strip().splitlines()[-1:]}]")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-python", default=sys.executable, help="a Python with torch and torch-harmonics")
    ap.add_argument("--full", action="store_true", help="also 0.25° (721 x 1440; ~1 min and ~10 GiB for the tables)")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    print(f"{'grid':>11}{'L':>5}{'chan':>6}  {'library':<16}{'round trip ms':>14}{'vs ours':>9}{'error':>10}{'setup s':>10}")
    for nlat, nlon, degree, channels in CASES + (FULL_CASES if args.full else []):
        rows = {"weatherens": ours(nlat, nlon, degree, channels, args.repeats),
                "dinosaur": dinosaur_sht(nlat, nlon, degree, channels, args.repeats),
                "torch-harmonics": torch_sht(args.torch_python, nlat, nlon, degree, channels, args.repeats)}
        ref = rows["weatherens"]["median_s"]
        for name, r in rows.items():
            if r is None:
                continue
            print(f"{nlat:>5} x {nlon:<4}{degree:>4}{channels:>6}  {name:<16}{1e3 * r['median_s']:>14.2f}"
                  f"{r['median_s'] / ref:>8.2f}x{r['error']:>10.1e}{r['build_s']:>10.1f}")
    print("\nvs ours: the library's time over ours (above 1: ours is faster). Error: max relative round-trip "
          "error of a band-limited field (float32).")


if __name__ == "__main__":
    main()
