"""Work that the tests run in a child process on a forced number of host devices.

The device count (`XLA_FLAGS=--xla_force_host_platform_device_count=N`) must be set before jax is
imported, so the parent sets it in the child's environment (`helpers.run_on_devices`) and this module
only checks it. The last line of stdout is a JSON object.

    python tests/on_devices.py hindcast RUN STORE OUT MEMBER_CHUNK
    python tests/on_devices.py train CONFIG STORE WORKDIR
"""

from __future__ import annotations

import argparse
import json

import jax

from weatherens import config
from weatherens.infer import forecast
from weatherens.train import loop


def hindcast(run: str, store: str, out: str, member_chunk: int) -> dict:
    """10 members, 12 h from 2000-01-12T00, Gaussian-perturbed initial conditions, written to `out`."""
    forecast.forecast([run], store, forecast.parse_init_times(["2000-01-12T00"]), 10, 12, out,
                      perturbation="gaussian", member_chunk=member_chunk, progress=False)
    return {"devices": jax.local_device_count()}


def train_two_steps(config_path: str, store: str, workdir: str) -> dict:
    """Two optimizer steps of batch 8 (a checkpoint at step 2, no validation); the final loss."""
    exp = config.load(config_path, ["train.steps=2", "train.validate_every=0", "data.batch_size=8",
                                    "train.checkpoint_every=2"])
    summary = loop.train(exp, store, workdir, progress=False)
    return {"devices": jax.device_count(), "loss": summary["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    h = sub.add_parser("hindcast")
    for name in ("run", "store", "out"):
        h.add_argument(name)
    h.add_argument("member_chunk", type=int)
    t = sub.add_parser("train")
    for name in ("config_path", "store", "workdir"):
        t.add_argument(name)
    args = vars(parser.parse_args())
    what = args.pop("what")
    print(json.dumps(hindcast(**args) if what == "hindcast" else train_two_steps(**args)))


if __name__ == "__main__":
    main()
