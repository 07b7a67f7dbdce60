"""Checkpoints that alone are enough for inference, written atomically, resumable exactly.

A checkpoint directory `DIR/checkpoints/<step>/` (orbax CheckpointManager) holds four items:
- `params`: the network parameters that inference uses (nnx.State): the moving average of the
  weights when training keeps one (`train.ema_decay` > 0), else the weights themselves;
- `optimizer`: the optimizer state, the step and, with an average, the online weights (only
  training reads it);
- `arrays`: what the predictor needs besides parameters: per-channel mean, std and residual std,
  the static fields, latitudes and longitudes;
- `meta` (JSON): the full config, the channel and forcing order, the static field names, the data
  provenance (store, split, statistics source) and versions.
orbax writes each step to a temporary directory and renames it when complete, so a killed write
never looks like a checkpoint; old steps are deleted only after a newer one is complete
(`max_to_keep`), so the last good checkpoint is never lost. The data position is the step itself:
the sampler's batch is a pure function of the step.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from weatherens import config
from weatherens.model.predictor import Predictor

ITEMS = ("params", "optimizer", "arrays", "meta")


def manager(workdir: str | Path, keep: int = 2, read_only: bool = False) -> ocp.CheckpointManager:
    """This process's view of the checkpoints. Only process 0 writes (`save`; the state is replicated and
    saved from host copies); every process reads for itself, so orbax runs single-process everywhere."""
    me = jax.process_index()
    local = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                               barrier_sync_key_prefix=f"weatherens-process-{me}")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                           create=False, read_only=read_only, multiprocessing_options=local)
    root = Path(workdir).resolve() / "checkpoints"
    if not read_only:
        root.mkdir(parents=True, exist_ok=True)
    return ocp.CheckpointManager(root, options=options,
                                 item_names=ITEMS)


def predictor_arrays(p: Predictor) -> dict[str, np.ndarray]:
    """The predictor's arrays; `static` only when there are static fields (orbax refuses empty arrays)."""
    out = {"mean": np.asarray(p.mean).ravel(), "std": np.asarray(p.std).ravel(),
           "residual_std": np.asarray(p.residual_std).ravel(), "lat": p.lat, "lon": p.lon}
    if p.static.size:
        out["static"] = p.static
    return out


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("weatherens", "jax", "flax", "optax", "orbax-checkpoint"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def save(mngr: ocp.CheckpointManager, params: nnx.State, opt_state: optax.OptState, step: int | jax.Array,
         predictor: Predictor, exp: config.Experiment, provenance: dict[str, Any],
         static_names: Sequence[str] = (), ema: nnx.State | None = None,
         extra_meta: dict[str, Any] | None = None) -> None:
    """Write a checkpoint for optimizer step `step` (blocking: it is complete when this returns).

    With `ema` (the weights' moving average) the `params` item holds the average and the optimizer
    item the online `params`. `extra_meta` (JSON) is merged into the meta item (e.g. a validation score).
    Call it on every process: process 0 writes, and all wait until it is complete."""
    step = int(step)
    if jax.process_index() != 0:
        multihost_utils.sync_global_devices(f"weatherens checkpoint {step}")
        return
    meta = {
        "config": config.to_dict(exp), "channels": list(predictor.channels), "forcings": list(predictor.forcings),
        "static": list(static_names), "provenance": provenance, "step": step, "versions": _versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ema": ema is not None, **(extra_meta or {}),
    }
    training = {"opt_state": opt_state, "step": np.int32(step)}
    if ema is not None:
        training["online"] = params
    mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(to_host(params if ema is None else ema)),
        optimizer=ocp.args.StandardSave(to_host(training)),
        arrays=ocp.args.StandardSave(predictor_arrays(predictor)),
        meta=ocp.args.JsonSave(meta)))
    mngr.wait_until_finished()
    multihost_utils.sync_global_devices(f"weatherens checkpoint {step}")


def to_host(tree):
    """numpy copies of (replicated) arrays: this process's first shard holds the whole value."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x),
                        tree)


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def predictor_from(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Predictor:
    # The demo section says how the training run's demo was scored, not what the model is; checkpoints
    # keep the demo settings of the version that wrote them.
    exp = config.from_dict({k: v for k, v in meta["config"].items() if k != "demo"}, "checkpoint config")
    static = arrays.get("static", np.zeros((0, arrays["lat"].size, arrays["lon"].size), np.float32))
    return Predictor(exp.model, meta["channels"], meta["forcings"], arrays["lat"], arrays["lon"],
                     arrays["mean"], arrays["std"], arrays["residual_std"], static)


def _host_target(tree):
    return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), tree)


def _place(tree, sharding):
    """Host arrays -> global arrays with `sharding` (every process holds the same values)."""
    if sharding is None:
        return tree
    return jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx]), tree)


def restore_training(mngr: ocp.CheckpointManager, predictor: Predictor, optimizer: optax.GradientTransformation,
                     step: int | None = None, sharding: jax.sharding.Sharding | None = None
                     ) -> tuple[nnx.State, optax.OptState, jax.Array | np.ndarray, nnx.State | None]:
    """(params, opt_state, step, ema) of a checkpoint (default the latest), laid out with `sharding`
    (host numpy arrays without one); ema is None when the checkpoint keeps no average."""
    step = mngr.latest_step() if step is None else step
    has_ema = bool(read_meta(mngr, step).get("ema", False))
    abstract_params = jax.eval_shape(lambda: predictor.init_params(jax.random.key(0)))
    abstract_opt = {"opt_state": jax.eval_shape(optimizer.init, abstract_params),
                    "step": jax.ShapeDtypeStruct((), np.int32)}
    if has_ema:
        abstract_opt["online"] = abstract_params
    got = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_host_target(abstract_params)),
        optimizer=ocp.args.StandardRestore(_host_target(abstract_opt))))
    params, opt = _place(got.params, sharding), _place(got.optimizer, sharding)
    if has_ema:
        return opt["online"], opt["opt_state"], opt["step"], params
    return params, opt["opt_state"], opt["step"], None


def _open_read_only(path: str | Path, step: int | None) -> tuple[ocp.CheckpointManager, int]:
    """A read-only manager of a training workdir (or its checkpoints/ folder) and the step to read
    (default the latest complete one)."""
    path = Path(path)
    workdir = path.parent if path.name == "checkpoints" else path
    if not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{path}: no checkpoints/ folder (expected a `weatherens train` workdir)")
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # orbax warns that a read-only manager will not save
    try:
        mngr = manager(workdir, read_only=True)
    finally:
        absl_log.setLevel(level)
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir / 'checkpoints'}: holds no complete checkpoint")
    return mngr, step


def load_meta(path: str | Path, step: int | None = None) -> dict[str, Any]:
    """The meta item (config, channels, provenance, step, ...) of a checkpoint, without its arrays."""
    mngr, step = _open_read_only(path, step)
    return read_meta(mngr, step)


def load_for_inference(path: str | Path, step: int | None = None) -> tuple[Predictor, nnx.State, dict[str, Any]]:
    """(predictor, params, meta) from a training workdir (or its checkpoints/ folder) alone."""
    mngr, step = _open_read_only(path, step)
    got = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), arrays=ocp.args.StandardRestore()))
    arrays = {k: np.asarray(v) for k, v in got.arrays.items()}
    predictor = predictor_from(got.meta, arrays)
    abstract = jax.eval_shape(lambda: predictor.init_params(jax.random.key(0)))
    params = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(_host_target(abstract)))).params
    return predictor, params, got.meta
