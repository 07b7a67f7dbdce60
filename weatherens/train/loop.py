"""`weatherens train`: the training loop around the jitted step.

Data -> step -> metrics -> checkpoints, resumable exactly: the batch of step s is a pure function
of s (`Sampler.batch`), the noise keys are functions of (seed, s, sample, member), and a checkpoint
holds params, optimizer state and s. So a run killed after the checkpoint at step s and started
again continues with the same batches and keys, and its loss curve equals the uninterrupted one.

The rollout length follows the schedule train.rollout_lengths / rollout_starts (phase i uses
rollout_lengths[i] steps from optimizer step rollout_starts[i] on); each phase has its own sampler
with that many targets. Metrics go to WORKDIR/metrics.jsonl, one JSON object per line
(kind "train" every log_every steps, "validation" and, with train.validation_inits, "long_validation"
every validate_every), written by process 0; after a resume, lines past the checkpoint's step are
dropped first. Validation scores the weights' moving average when training keeps one. With
long-lead validation the checkpoint of the best score so far (`train.validation`) is also kept in
WORKDIR/best, a workdir of its own that `checkpoint.load_for_inference` reads: the one to ship.
"""

from __future__ import annotations

import logging
import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, cast

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from weatherens import checkpoint, config, grid, sharding, shipped
from weatherens.config import Experiment, ModelConfig
from weatherens.errors import InputError
from weatherens.data import era5, stats
from weatherens.data.pipeline import Sampler
from weatherens.model.predictor import Predictor
from weatherens.train import step as train_step_lib
from weatherens.train import validation as long_validation

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def rollout_length(exp: Experiment, step: int) -> int:
    """The rollout length of the phase holding `step` (the schedule is checked when the config loads)."""
    lengths, starts = exp.train.rollout_lengths, exp.train.rollout_starts
    return lengths[int(np.searchsorted(starts, step, side="right")) - 1]


def _sampler(exp: Experiment, store: str, split: str, k: int) -> Sampler:
    cfg = dataclasses.replace(exp.data, rollout_steps=k)
    return Sampler.from_config(cfg, split, store=store, process_index=jax.process_index(),
                               process_count=jax.process_count())


def _statistics(exp: Experiment, store: str, workdir: Path):
    """Statistics of the training split, computed once (by process 0) and saved in the workdir."""
    path = workdir / "stats.nc"
    if jax.process_index() == 0:
        ds = era5.open(store, exp.data.variables, exp.data.levels, exp.data.train.as_slice())
        stats.load_or_compute(ds, path, exp.data.timestep_hours)
    multihost_utils.sync_global_devices("weatherens statistics")
    return stats.load(path)


def build_predictor(exp: Experiment, sampler: Sampler, table) -> Predictor:
    per = stats.per_channel(table, sampler.channels)
    return Predictor(exp.model, sampler.channels, exp.data.forcings, sampler.lat, sampler.lon,
                     per["mean"], per["std"], per["residual_std"], sampler.static)


class MetricsLog:
    """Append-only JSON lines, cut back to a step on resume; only process 0 writes."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.active = jax.process_index() == 0
        if self.active and path.exists():
            keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        if self.active:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _per_variable(channels, values) -> dict[str, float]:
    return {c: float(v) for c, v in zip(channels, np.asarray(values))}


def train(exp: Experiment, store: str, workdir: str | Path, *, progress: bool = True) -> dict:
    """Train (or resume) in `workdir`; returns a summary (final step, losses, timings)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = exp.train
    mesh = sharding.data_mesh(cfg.member_shards, cfg.lat_shards)
    sharding.check_batch(exp.data.batch_size * jax.process_count(), mesh)
    replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)

    first = _sampler(exp, store, "train", rollout_length(exp, 0))
    provenance = {"store": str(store), "train": dataclasses.asdict(exp.data.train)}
    start_from = initial_weights(exp, first) if cfg.init_from else None
    if start_from is None:
        table = _statistics(exp, store, workdir)
        predictor = build_predictor(exp, first, table)
        provenance |= {"statistics": str(workdir / "stats.nc"), "statistics_source": table.attrs.get("source", "")}
    else:  # the weights' units: the statistics of the checkpoint they come from
        predictor, source_meta = start_from[0], start_from[4]
        provenance |= {key: source_meta["provenance"].get(key, "") for key in ("statistics", "statistics_source")}
        provenance["init_from"] = str(start_from[3])
    optimizer = train_step_lib.make_optimizer(cfg)
    objective = train_step_lib.Objective(predictor, cfg, mesh)
    eval_objective = train_step_lib.Objective(predictor, dataclasses.replace(cfg, alpha=1.0), mesh)
    tables = jax.device_put(predictor.tables(), replicated)  # arguments of the programs, not constants in them
    step_fn = functools.partial(jax.jit(predictor.with_tables(
        train_step_lib.make_train_step(objective, optimizer, cfg.seed)), donate_argnums=1), tables)
    eval_fn = functools.partial(jax.jit(predictor.with_tables(
        train_step_lib.make_eval_step(eval_objective, cfg.seed))), tables)

    val_sampler = validation_sampler(exp, store) if cfg.validate_every else None
    mngr = checkpoint.manager(workdir, keep=cfg.keep_checkpoints)
    if mngr.latest_step() is not None:
        params, opt_state, step0, ema = checkpoint.restore_training(mngr, predictor, optimizer, sharding=replicated)
        state = train_step_lib.TrainState(params, opt_state, cast(jax.Array, step0), ema)  # placed: a jax.Array
        logger.warning("train: resuming from the checkpoint at step %d", int(step0))
    elif start_from is not None:
        _, params, init_step, source, _ = start_from
        state = jax.device_put(train_step_lib.state_from(params, init_step, optimizer, ema=cfg.ema_decay > 0),
                               replicated)
        logger.warning("train: starting from the weights of %s at step %d", source, init_step)
    else:
        state = jax.device_put(train_step_lib.init_state(predictor, optimizer, cfg.seed, ema=cfg.ema_decay > 0),
                               replicated)
    start = int(state.step)
    log = MetricsLog(workdir / "metrics.jsonl", start)
    long_lead, best = (_long_lead(exp, store, train_step_lib.Objective(predictor, eval_objective.cfg), workdir)
                       if cfg.validate_every and cfg.validation_inits else (None, None))  # replicated: any member count

    def save(state, into=mngr, extra=None):
        checkpoint.save(into, state.params, state.opt_state, state.step, predictor, exp, provenance, exp.data.static,
                        ema=state.ema, extra_meta=extra)

    if start == 0 and mngr.latest_step() is None:
        save(state)
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not progress or jax.process_index())
    wait_s = busy_s = compile_s = 0.0
    timed = 0
    last: dict[str, Any] = {}
    s = start
    while s < cfg.steps:
        k = rollout_length(exp, s)
        phase_end = min([cfg.steps] + [b for b in cfg.rollout_starts if b > s])
        sampler = first if k == first.cfg.rollout_steps else _sampler(exp, store, "train", k)
        batches = sampler.iterate(start_step=s, num_steps=phase_end - s)
        t0 = time.perf_counter()
        for batch in batches:
            t1 = time.perf_counter()
            arrays = sharding.global_batch(
                {"inputs": batch.inputs, "forcings": batch.forcings, "targets": batch.targets}, batched)
            state, metrics = step_fn(state, arrays)
            loss = float(metrics["loss"])
            t2 = time.perf_counter()
            if s == start:
                compile_s = t2 - t1  # the first step compiles
            else:
                wait_s, busy_s, timed = wait_s + (t1 - t0), busy_s + (t2 - t1), timed + 1
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss} at step {s + 1}; stopped, the last good checkpoint "
                    f"(step {mngr.latest_step()}) in {workdir / 'checkpoints'} is kept")
            s += 1
            last = {"step": s, "loss": loss, "grad_norm": float(metrics["grad_norm"])}
            if s % cfg.log_every == 0 or s == cfg.steps:
                log.write({"kind": "train", **last, "rollout": k, "data_wait_share": wait_s / max(wait_s + busy_s, 1e-9),
                           "crps": _per_variable(predictor.channels, metrics["crps"])})
            if cfg.validate_every and (s % cfg.validate_every == 0 or s == cfg.steps):
                assert val_sampler is not None  # made when cfg.validate_every
                last["validation"] = validate(val_sampler, cfg.validation_batches, eval_fn, state.inference_params(),
                                              predictor, batched)
                log.write({"kind": "validation", "step": s, **last["validation"]})
                if long_lead is not None:
                    assert best is not None  # made with long_lead
                    scores = long_lead(checkpoint.to_host(state.inference_params()))
                    log.write({"kind": "long_validation", "step": s, **scores})
                    if best.better(scores["score"]) and s not in best.manager.all_steps():  # a resumed run re-scores
                        save(state, best.manager, {"validation_score": scores["score"]})
                        best.score = scores["score"]
                    last["long_validation"] = scores
            if s % cfg.checkpoint_every == 0 or s == cfg.steps:
                save(state)
            rate = bar.format_dict.get("rate") or 0.0
            bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate * arrays['inputs'].shape[0]:.1f}")
            bar.update()
            t0 = time.perf_counter()
    bar.close()
    global_batch = exp.data.batch_size * jax.process_count()
    step_s = (wait_s + busy_s) / max(timed, 1)
    return {**last, "start_step": start, "data_wait_share": wait_s / max(wait_s + busy_s, 1e-9),
            "first_step_s": compile_s, "step_s": step_s, "samples_per_s": global_batch / step_s if timed else 0.0,
            "workdir": str(workdir)}


HOW_COMPUTED = ("remat_blocks", "compute_dtype", "zonal_transform")  # model fields that leave the parameters' meaning unchanged


def model_misfit(trained: ModelConfig, wanted: ModelConfig) -> str | None:
    """Which model field of a checkpoint's config (as loaded: fields added since it was saved take
    their defaults) differs from this run's, or None; how the network is computed (`HOW_COMPUTED`)
    may differ."""
    there, here = config.to_dict(trained), config.to_dict(wanted)
    for key, value in here.items():
        if key not in HOW_COMPUTED and there[key] != value:
            return f"model.{key}: {there[key]!r} there, {value!r} here"
    return None


def initial_weights(exp: Experiment, sampler: Sampler) -> tuple[Predictor, Any, int, Path, dict[str, Any]]:
    """(predictor, inference params, step, folder, meta) of the checkpoint that `train.init_from` names: a
    training workdir, or the name of a shipped checkpoint. Its model config, channels, forcings and
    grid must be this run's; the predictor keeps its normalisation statistics (the weights' units)."""
    name = exp.train.init_from
    path = Path(name) if Path(name).exists() else shipped.CHECKPOINTS / name
    if not path.exists():
        raise InputError(f"train.init_from: {name!r} is neither a folder nor a checkpoint shipped in {shipped.CHECKPOINTS}")
    predictor, params, meta = checkpoint.load_for_inference(path)
    misfit = model_misfit(predictor.cfg, exp.model)
    if misfit:
        raise InputError(f"{path}: train.init_from needs this run's model ({misfit})")
    for what, there, mine in (("channels", list(predictor.channels), list(sampler.channels)),
                              ("forcings", list(predictor.forcings), list(exp.data.forcings))):
        if there != mine:
            raise InputError(f"{path}: train.init_from needs this run's {what} ({there} there, {mine} here)")
    if predictor.lat.shape != sampler.lat.shape or not np.allclose(predictor.lat, sampler.lat) \
            or not np.allclose(predictor.lon, sampler.lon):
        raise InputError(f"{path}: train.init_from needs this run's grid ({predictor.lat.size} x {predictor.lon.size} "
                         f"there, {sampler.lat.size} x {sampler.lon.size} here)")
    step = int(meta["step"])
    if step >= exp.train.steps:
        raise InputError(f"{path}: its step {step} is not before train.steps = {exp.train.steps}; add phases after it")
    return predictor, params, step, path, meta


class BestCheckpoint:
    """WORKDIR/best: one checkpoint, the one with the lowest long-lead validation score so far."""

    def __init__(self, workdir: Path):
        self.manager = checkpoint.manager(workdir / "best", keep=1)
        step = self.manager.latest_step()
        self.score = math.inf if step is None else float(checkpoint.read_meta(self.manager, step)["validation_score"])

    def better(self, score: float) -> bool:
        return math.isfinite(score) and score < self.score


def _long_lead(exp: Experiment, store: str, objective: train_step_lib.Objective, workdir: Path):
    data = long_validation.build_set(exp, store, objective.predictor.channels)
    runner = long_validation.LongLeadValidation(objective, data, exp.train.validation_members, exp.train.seed + 3,
                                                exp.data.timestep_hours)
    return runner, BestCheckpoint(workdir)


def validation_sampler(exp: Experiment, store: str) -> Sampler:
    cfg = dataclasses.replace(exp.data, rollout_steps=1)
    return Sampler.from_config(cfg, "validation", store=store, shuffle=False,
                               process_index=jax.process_index(), process_count=jax.process_count())


def validate(sampler: Sampler, batches: int, eval_fn, params, predictor: Predictor, batched) -> dict:
    """Fair CRPS (standardised units, area-weighted) per channel over the first validation batches, and,
    as the reference, the CRPS of persistence (its absolute error) on the same samples. With several
    processes, the persistence reference is this process's slice only."""
    n = max(1, min(batches, len(sampler)))
    totals: float | np.ndarray = 0.0
    loss, persistence = 0.0, 0.0
    for i in range(n):
        b = sampler.batch(i)
        arrays = sharding.global_batch({"inputs": b.inputs, "forcings": b.forcings, "targets": b.targets}, batched)
        out = eval_fn(params, arrays, i)
        totals, loss = totals + np.asarray(out["crps"]), loss + float(out["loss"])
        error = np.abs(np.asarray(predictor.normalize(b.targets[:, 0])) - np.asarray(predictor.normalize(b.inputs[:, 1])))
        persistence = persistence + grid.area_mean(error, predictor.lat).mean(axis=0)
    return {"loss": loss / n, "crps": _per_variable(predictor.channels, totals / n),
            "persistence_crps": _per_variable(predictor.channels, persistence / n)}
