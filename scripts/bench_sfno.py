#!/usr/bin/env python3
"""Our SFNO-style network's training step against torch-harmonics' SFNO, at equal work, in one run.

    python scripts/bench_sfno.py [--torch-python PATH] [--repeats 10] [--rounds 2]

Both networks at the same grid (64 x 32), channels (42 in, 18 out), width (48), depth (4 blocks),
MLP ratio (1.5) and batch (16 samples), trained with MSE and AdamW (lr 1e-3), on random inputs,
float32, on this machine's CPUs (2 threads for torch). Ours is `weatherens.model.network`
(noise-conditioned norms fed a latent vector per sample, MLP encoder and decoder, a linear skip
per block: 1.10 x theirs' multiply-adds; full degree 31 = the grid's limit), with its zonal
transform as a matmul (the CPU default at this grid) and as an FFT (the default above 256
longitudes and on other backends);
theirs is `torch_harmonics.examples.models.sfno.SphericalFourierNeuralOperator`, at
`scale_factor=1` (equal work: the blocks run on the 32 x 64 grid) and at its default
`scale_factor=3` (the blocks run on an 11 x 21 grid: a ninth of the points, a third of the
degrees; not equal work, shown for reference). The two are timed in alternating rounds (torch in
a subprocess of --torch-python, a Python with torch and torch-harmonics installed: they are not
weatherens dependencies), and the table gives the median over rounds of each round's median step
time, and samples per second.
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
import optax
from flax import nnx

from weatherens import config, grid
from weatherens.model.network import SphericalForecaster
from weatherens.sphere.sht import SphericalHarmonicTransform

NLAT, NLON, IN, OUT, WIDTH, BLOCKS, RATIO, BATCH = 32, 64, 42, 18, 48, 4, 1.5, 16

_TORCH = r"""
import json, sys, time, numpy as np, torch
from torch_harmonics.examples.models.sfno import SphericalFourierNeuralOperator
torch.set_num_threads(2)
scale, repeats = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
net = SphericalFourierNeuralOperator(img_size=(%(NLAT)d, %(NLON)d), grid="equiangular", scale_factor=scale,
                                     in_chans=%(IN)d, out_chans=%(OUT)d, embed_dim=%(WIDTH)d, num_layers=%(BLOCKS)d,
                                     mlp_ratio=%(RATIO)r)
opt = torch.optim.AdamW(net.parameters(), 1e-3)
x, y = torch.randn(%(BATCH)d, %(IN)d, %(NLAT)d, %(NLON)d), torch.randn(%(BATCH)d, %(OUT)d, %(NLAT)d, %(NLON)d)
def step():
    opt.zero_grad(); loss = torch.mean((net(x) - y) ** 2); loss.backward(); opt.step()
for _ in range(3):
    step()
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
print(json.dumps({"median_s": float(np.median(times)), "params": sum(p.numel() for p in net.parameters()),
                  "torch": torch.__version__}))
""" % dict(NLAT=NLAT, NLON=NLON, IN=IN, OUT=OUT, WIDTH=WIDTH, BLOCKS=BLOCKS, RATIO=RATIO, BATCH=BATCH)


def ours(repeats: int, zonal_matmul: bool) -> dict:
    lat = grid.equiangular_latitudes(NLAT)
    cfg = config.ModelConfig(embed_dim=WIDTH, blocks=BLOCKS, mlp_ratio=RATIO, noise_dim=16, noise_fields=0)
    sht = SphericalHarmonicTransform(lat, NLON, zonal_matmul=zonal_matmul)
    net = SphericalForecaster(IN, OUT, cfg, sht, rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(net)
    optimizer = optax.adamw(1e-3)
    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(keys[0], (BATCH, IN, NLAT, NLON))
    y = jax.random.normal(keys[1], (BATCH, OUT, NLAT, NLON))
    z = jax.random.normal(keys[2], (BATCH, cfg.noise_dim))

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(jnp.square(nnx.merge(graphdef, p)(x, z) - y)))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = (params, optimizer.init(params))
    for _ in range(3):
        state = jax.block_until_ready(step(*state)[:2])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(step(*state)[:2])
        times.append(time.perf_counter() - t0)
    size = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    return {"median_s": float(np.median(times)), "params": size, "jax": jax.__version__}


def forward_macs(network: str) -> float:
    """Multiply-adds of one sample's forward pass in the dense contractions (FFTs and pointwise
    non-linearities left out), counted from each architecture as built here.

    Pointwise layers: C_in x C_out per grid point. Spectral convolution: analysis and synthesis
    2 (real, imaginary) x C x nlat per (l, m) pair computed; the mix 4 x C x C per pair (complex).
    torch-harmonics contracts the whole (lmax + 1) x (mmax + 1) = 32 x 32 rectangle; ours the
    groups of orders of `layers.order_chunks` with their degrees l >= m0 (640 of 1024 pairs).
    Theirs (0.9.3): encoder 42 -> 48 and decoder 48 -> 18 single 1 x 1 convolutions, per block the
    spectral convolution and an MLP 48 -> 72 -> 48. Ours: MLP encoder 42 -> 72 -> 48 and decoder
    48 -> 72 -> 18, per block the spectral convolution, a 48 -> 48 skip and an MLP 48 -> 72 -> 48
    (the conditional norms' z-projections are per sample, negligible).
    """
    from weatherens.model.layers import order_chunks

    hidden, points, c = int(RATIO * WIDTH), NLAT * NLON, WIDTH
    degrees = NLAT  # ours: lmax = nlat - 1 on this grid without poles; theirs: lmax = mmax = nlat modes
    if network == "weatherens":
        pointwise = IN * hidden + hidden * c + BLOCKS * (c * c + 2 * c * hidden) + c * hidden + hidden * OUT
        pairs = sum((m1 - m0) * (degrees - m0) for m0, m1 in order_chunks(degrees))
    else:
        pointwise = IN * c + BLOCKS * 2 * c * hidden + c * OUT
        pairs = degrees * degrees
    spectral = BLOCKS * pairs * (2 * 2 * c * NLAT + 4 * c * c)
    return float(pointwise * points + spectral)


def theirs(python: str, scale: int, repeats: int) -> dict:
    out = subprocess.run([python, "-c", _TORCH, str(scale), str(repeats)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"torch-harmonics' SFNO did not run under {python}:\n{out.stderr[-2000:]}\n"
                         "Install it beside weatherens, e.g.: python3 -m venv /tmp/th && "
                         "/tmp/th/bin/pip install torch torch-harmonics; then --torch-python /tmp/th/bin/python")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-python", default=sys.executable, help="a Python with torch and torch-harmonics")
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the four")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"weatherens": [], "weatherens, zonal FFT": [], "torch-harmonics sf=1": [],
                                   "torch-harmonics sf=3": []}
    for _ in range(args.rounds):
        runs["weatherens"].append(ours(args.repeats, zonal_matmul=True))
        runs["weatherens, zonal FFT"].append(ours(args.repeats, zonal_matmul=False))
        runs["torch-harmonics sf=1"].append(theirs(args.torch_python, 1, args.repeats))
        runs["torch-harmonics sf=3"].append(theirs(args.torch_python, 3, args.repeats))
    print(f"grid {NLAT} x {NLON}, {IN} -> {OUT} channels, width {WIDTH}, {BLOCKS} blocks, MLP ratio {RATIO}, "
          f"batch {BATCH}, MSE + AdamW, float32, CPU; median of {args.rounds} rounds x {args.repeats} steps")
    ref = float(np.median([r["median_s"] for r in runs["torch-harmonics sf=1"]]))
    ours_work = forward_macs("weatherens")  # the same network on either zonal path
    work = {"weatherens": ours_work, "weatherens, zonal FFT": ours_work,
            "torch-harmonics sf=1": forward_macs("torch-harmonics")}
    print(f"\n{'network':<26}{'params':>10}{'fwd MMAC/sample':>17}{'step ms':>9}{'samples/s':>11}{'vs sf=1':>9}"
          f"{'per MAC vs sf=1':>17}")
    for name, rs in runs.items():
        s = float(np.median([r["median_s"] for r in rs]))
        if name not in work:
            print(f"{name:<26}{rs[0]['params']:>10,}{'':>17}{1e3 * s:>9.0f}{BATCH / s:>11.1f}{ref / s:>8.2f}x")
            continue
        ratio = work[name] / work["torch-harmonics sf=1"]
        print(f"{name:<26}{rs[0]['params']:>10,}{work[name] / 1e6:>17.1f}{1e3 * s:>9.0f}{BATCH / s:>11.1f}"
              f"{ref / s:>8.2f}x{ref / s * ratio:>16.2f}x")
    print("\nper round (ms): " + "; ".join(f"{name} " + " ".join(f"{1e3 * r['median_s']:.0f}" for r in rs)
                                        for name, rs in runs.items()))
    print("The zonal transform (matmul or FFT) is not counted in the work: the same network either way.")
    print("params: torch counts a complex weight once, weatherens stores real and imaginary parts (the same"
          "\nspectral weights, 48 x 48 x 32 per block). fwd MMAC/sample: multiply-adds of the dense contractions"
          "\n(`forward_macs`). per MAC: the samples/s ratio times the work ratio, i.e. the throughput at equal work.")


if __name__ == "__main__":
    main()
