#!/usr/bin/env python3
"""Where a training step's time goes: the rollout's gradient part against its no-gradient part.

    python scripts/bench_step.py [--checkpoint small2] [--rollouts 1 8 16 32] [--repeats 3]

For a shipped checkpoint's model on its grid, with the recipe's batch, members and
`train.gradient_steps` = k, on random inputs of the right shapes, it times (median of --repeats
after one compile run) for each rollout length r:
  step      one jitted optimizer step as `weatherens train` runs it (value_and_grad of the loss),
  forward   the loss of the r-step rollout without any gradient (the same function, no grad),
  grad k    one optimizer step of a k-step rollout (the part that must carry a gradient),
and prints the reference the step can at best approach, forward * (r - k) / r + grad k, and the
step's ratio to it. A ratio near 1 means the no-gradient steps cost what a forward pass costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from weatherens import checkpoint, config
from weatherens.shipped import CHECKPOINTS
from weatherens.train import step as train_step_lib


def timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def random_batch(predictor, batch: int, steps: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    c, f, ny, nx = len(predictor.channels), len(predictor.forcings), predictor.lat.size, predictor.lon.size
    mean, std = np.asarray(predictor.mean), np.asarray(predictor.std)

    def fields(*lead):
        return jnp.asarray(mean + std * rng.standard_normal(lead + (c, ny, nx)), jnp.float32)

    return {"inputs": fields(batch, 2), "targets": fields(batch, steps),
            "forcings": jnp.asarray(rng.random((batch, steps + 2, f, ny, nx)), jnp.float32)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="small2")
    ap.add_argument("--rollouts", type=int, nargs="+", default=[1, 8, 16, 32])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    predictor, params, meta = checkpoint.load_for_inference(CHECKPOINTS / args.checkpoint)
    exp = config.from_dict(meta["config"])
    cfg = exp.train
    k = cfg.gradient_steps
    optimizer = train_step_lib.make_optimizer(cfg)
    state = train_step_lib.state_from(params, 0, optimizer, ema=cfg.ema_decay > 0)
    objective = train_step_lib.Objective(predictor, cfg)
    step_fn = jax.jit(train_step_lib.make_train_step(objective, optimizer, cfg.seed))
    keys = train_step_lib.sample_keys(0, jnp.asarray(0), exp.data.batch_size, cfg.members)
    forward = jax.jit(lambda p, b: objective.batch_loss(p, b, keys)[0])
    b = exp.data.batch_size
    print(f"{args.checkpoint}: batch {b}, members {cfg.members}, gradient_steps {k}, remat {cfg.remat}, "
          f"{jax.device_count()} device(s) {jax.devices()[0].platform}")
    grad_k = timed(step_fn, state, random_batch(predictor, b, k), repeats=args.repeats) if k else 0.0
    print(f"\n{'rollout':>7}{'step s':>9}{'forward s':>11}{'grad k s':>10}{'reference s':>13}{'step/ref':>10}")
    for r in args.rollouts:
        batch = random_batch(predictor, b, r)
        step_s = timed(step_fn, state, batch, repeats=args.repeats)
        forward_s = timed(forward, state.params, batch, repeats=args.repeats)
        if 0 < k < r:
            reference = forward_s * (r - k) / r + grad_k
        else:
            reference = step_s
        print(f"{r:>7}{step_s:>9.2f}{forward_s:>11.2f}{grad_k if 0 < k < r else float('nan'):>10.2f}"
              f"{reference:>13.2f}{step_s / reference:>10.2f}")


if __name__ == "__main__":
    main()
