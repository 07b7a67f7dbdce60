"""One jitted training step: M members per sample, an autoregressive rollout, afCRPS, AdamW.

For each sample b of the global batch and member j, the noise key is
    fold_in(fold_in(fold_in(key(seed), step), b), j)
(`sample_keys`), so the step is the same function of (params, batch, step) on one device or eight
and in one process or several. The loss of a sample is the almost-fair CRPS (Lang et al. 2024)
of its M members against the target, on standardised fields, area- and channel-weighted, averaged
over the r rollout steps (so that phases of different r share one loss scale and one clipping
norm); the batch loss is its mean over samples. The rollout is a `lax.scan` whose body is
rematerialised (`jax.checkpoint`) so that backward memory stays about one step's activations.
With `train.gradient_steps` = k < r the first r - k steps run without gradient (their parameters
and states under `stop_gradient`, no activations kept): the loss still averages all r steps, but
its gradient flows through the last k only (the push-forward trick of Brandstetter, Worrall &
Welling 2022, ICLR, "Message passing neural PDE solvers", which trains a step on the distribution
of states the model itself reaches). The optimizer is optax AdamW with global-norm clipping
(Loshchilov & Hutter 2019) on a linear warm-up and cosine decay (the schedule of AIFS and
GraphCast training), either once over all steps or afresh in every rollout phase (GraphCast's
and AIFS's fine-tuning phases each have their own schedule). An exponential moving average of the
weights (`ema_update`) is what validation and inference use when `train.ema_decay` > 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from weatherens import grid, sharding
from weatherens.config import TrainConfig
from weatherens.errors import InputError
from weatherens.model import noise
from weatherens.model.predictor import Predictor
from weatherens.train import losses


class TrainState(NamedTuple):
    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: optimizer steps taken
    ema: nnx.State | None  # moving average of params; None when train.ema_decay = 0

    def inference_params(self) -> nnx.State:
        """The weights that validation, checkpoint selection and inference use: the average if kept."""
        return self.params if self.ema is None else self.ema


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Learning rate as a function of the optimizer step (module docstring).

    One schedule: linear warm-up from 0 over warmup_steps to learning_rate, cosine decay to
    end_learning_rate at `steps`. Per phase (phase_learning_rates set): phase i, from
    rollout_starts[i] to the next start (or `steps`), warms up over phase_warmup_steps[i] to
    phase_learning_rates[i] and decays to end_learning_rate at its end (optax.join_schedules).
    """
    def one(peak: float, warmup: int, length: int) -> optax.Schedule:
        if warmup == 0:
            return optax.cosine_decay_schedule(peak, max(length, 1), alpha=cfg.end_learning_rate / peak)
        return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=peak, warmup_steps=warmup,
                                                  decay_steps=max(length, warmup + 1), end_value=cfg.end_learning_rate)

    if not cfg.phase_learning_rates:
        return one(cfg.learning_rate, cfg.warmup_steps, cfg.steps)
    ends = list(cfg.rollout_starts[1:]) + [cfg.steps]
    phases = [one(peak, warmup, end - start) for peak, warmup, start, end
              in zip(cfg.phase_learning_rates, cfg.phase_warmup_steps, cfg.rollout_starts, ends)]
    return optax.join_schedules(phases, boundaries=list(cfg.rollout_starts[1:]))


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW on `learning_rate_schedule`, after clipping the global gradient norm."""
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adamw(learning_rate_schedule(cfg), weight_decay=cfg.weight_decay))


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
    """min(decay, (1 + n) / (10 + n)) after n updates: the average forgets its random start quickly
    (the num_updates rule of TensorFlow's ExponentialMovingAverage, as in Polyak averaging with warm-up)."""
    n = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def ema_update(ema: nnx.State | None, params: nnx.State, decay: float, step: jax.Array) -> nnx.State | None:
    """ema <- d ema + (1 - d) params with d = `ema_decay_at(decay, step)`; None when there is no average."""
    if ema is None:
        return None
    d = ema_decay_at(decay, step)
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)


def sample_keys(seed: int, step: jax.Array, batch: int, members: int) -> jax.Array:
    """Keys (batch, members) for one optimizer step, from the seed, the step and the global sample index."""
    step_key = jax.random.fold_in(jax.random.key(seed), step)
    per_sample = jax.vmap(lambda b: jax.random.fold_in(step_key, b))(jnp.arange(batch))
    return jax.vmap(lambda k: jax.vmap(lambda j: noise.member_key(k, j))(jnp.arange(members)))(per_sample)


class Objective:
    """The loss of a batch, given the predictor and the training config (static)."""

    def __init__(self, predictor: Predictor, cfg: TrainConfig, mesh: Mesh | None = None):
        """With a `mesh` whose MEMBER or LAT axis is larger than 1, each sample's members and
        latitudes are split over them (`sharding.member_constraint`); without one, the step's arrays
        are placed by jit's propagation."""
        if cfg.members < 2 and cfg.alpha != 0:
            raise InputError(f"train.members = {cfg.members}: the (almost-)fair CRPS needs at least 2 members")
        if mesh is not None:
            sharding.check_lat_shards(len(predictor.lat), mesh.shape[sharding.LAT])
        self.predictor, self.cfg, self.mesh = predictor, cfg, mesh
        self.area_weights = jnp.asarray(grid.latitude_weights(predictor.lat), jnp.float32)
        self.channel_weights = jnp.asarray(
            losses.channel_weights(predictor.channels, cfg.variable_weights, cfg.level_weighting), jnp.float32)

    def ensemble_rollout(self, params, inputs, forcings, member_keys, steps: int):
        """Members' trajectories: inputs (2, C, lat, lon), forcings (>= steps + 2, F, lat, lon),
        member_keys (M,) -> (steps, M, C, lat, lon). With gradient_steps = k in (0, steps) the first
        steps - k steps are computed without gradient (module docstring)."""
        p = self.predictor
        step_fn = jax.vmap(p.step, in_axes=(None, 0, 0, None, None, 0, 0))

        def split(x, on_grid=True):
            return sharding.member_constraint(x, self.mesh, on_grid)

        def advance(weights, carry, n):
            x_prev, x_now, state = carry
            keys = jax.vmap(lambda k: noise.step_key(k, n))(member_keys)
            x_next, state = step_fn(weights, x_prev, x_now, forcings[n + 1], forcings[n + 2], keys, state)
            x_next, state = split(x_next), split(state, on_grid=False)  # the noise state is spectral
            return (x_now, x_next, state), x_next

        def with_gradient(carry, n):
            return advance(params, carry, n)

        m = member_keys.shape[0]
        x_prev, x_now = (split(jnp.broadcast_to(x, (m,) + x.shape)) for x in (inputs[0], inputs[1]))
        carry = (x_prev, x_now, split(jax.vmap(p.initial_noise)(member_keys), on_grid=False))
        free = steps - self.cfg.gradient_steps if 0 < self.cfg.gradient_steps < steps else 0
        # one step with gradient keeps its activations anyway: rematerialising it only adds a forward pass
        body = jax.checkpoint(with_gradient) if self.cfg.remat and steps - free > 1 else with_gradient
        if free == 0:
            return jax.lax.scan(body, carry, jnp.arange(steps))[1]
        frozen = jax.lax.stop_gradient(params)
        carry, pushed = jax.lax.scan(lambda c, n: advance(frozen, c, n), carry, jnp.arange(free))
        carry = jax.lax.stop_gradient(carry)
        _, trained = jax.lax.scan(body, carry, jnp.arange(free, steps))
        return jnp.concatenate([jax.lax.stop_gradient(pushed), trained])

    def sample_loss(self, params, inputs, forcings, targets, member_keys):
        """Mean over rollout steps of the weighted afCRPS; also per-channel afCRPS (C,) averaged over steps."""
        steps = targets.shape[0]
        trajectory = self.ensemble_rollout(params, inputs, forcings, member_keys, steps)
        norm = self.predictor.normalize
        pointwise = losses.afcrps(norm(trajectory), norm(targets), alpha=self.cfg.alpha, member_axis=1)
        per_step = jax.vmap(lambda x: losses.weighted_mean(x, self.area_weights, self.channel_weights))(pointwise)
        area = self.area_weights[:, None] / self.area_weights.mean()
        per_channel = (pointwise * area).mean(axis=(0, -2, -1))
        return per_step.mean(), per_channel

    def batch_loss(self, params, batch, keys):
        """batch: dict of inputs (B, 2, C, ...), forcings (B, k + 2, F, ...), targets (B, k, C, ...);
        keys (B, M). Returns (mean loss, per-channel afCRPS (C,))."""
        loss, per_channel = jax.vmap(self.sample_loss, in_axes=(None, 0, 0, 0, 0),
                                     spmd_axis_name=sharding.BATCH if sharding.splits_samples(self.mesh) else None)(
            params, batch["inputs"], batch["forcings"], batch["targets"], keys)
        return loss.mean(), per_channel.mean(axis=0)


def make_train_step(objective: Objective, optimizer: optax.GradientTransformation, seed: int):
    """train_step(state, batch) -> (state, metrics): a pure function, to be jitted by the caller."""

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        b = batch["inputs"].shape[0]
        keys = sample_keys(seed, state.step, b, objective.cfg.members)
        (loss, per_channel), grads = jax.value_and_grad(objective.batch_loss, has_aux=True)(state.params, batch, keys)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = ema_update(state.ema, params, objective.cfg.ema_decay, state.step)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "crps": per_channel}
        return TrainState(params, opt_state, state.step + 1, ema), metrics

    return train_step


def make_eval_step(objective: Objective, seed: int):
    """eval_step(params, batch, index) -> per-channel afCRPS (C,) and loss, with keys from (seed, -1 - index)."""

    def eval_step(params, batch, index):
        keys = sample_keys(seed + 1, index, batch["inputs"].shape[0], objective.cfg.members)
        loss, per_channel = objective.batch_loss(params, batch, keys)
        return {"loss": loss, "crps": per_channel}

    return eval_step


def init_state(predictor: Predictor, optimizer: optax.GradientTransformation, seed: int,
               ema: bool = False) -> TrainState:
    """Fresh parameters from `seed`, the optimizer's initial state, step 0, and (with `ema`) an average
    that starts at the parameters."""
    return state_from(predictor.init_params(jax.random.key(np.uint32(seed))), 0, optimizer, ema)


def state_from(params: nnx.State, step: int, optimizer: optax.GradientTransformation, ema: bool = False) -> TrainState:
    """Training state that starts at `step` from given weights (`train.init_from`): the optimizer's
    initial state (fresh Adam moments, bias correction from 0) with its learning-rate schedule at
    `step`, and, with `ema`, an average that starts at the weights."""
    def schedule_at_step(s):
        return s._replace(count=jnp.asarray(step, jnp.int32)) if isinstance(s, optax.ScaleByScheduleState) else s

    params = jax.tree.map(jnp.asarray, params)
    opt_state = jax.tree.map(schedule_at_step, optimizer.init(params),
                             is_leaf=lambda s: isinstance(s, optax.ScaleByScheduleState))
    average = jax.tree.map(jnp.copy, params) if ema else None
    return TrainState(params, opt_state, jnp.asarray(step, jnp.int32), average)  # no buffer shared (donation)
