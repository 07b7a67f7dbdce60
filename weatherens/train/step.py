"""One jitted training step: M members per sample, an autoregressive rollout, afCRPS, AdamW.

For each sample b of the global batch and member j, the noise key is
    fold_in(fold_in(fold_in(key(seed), step), b), j)
(`sample_keys`), so the step is the same function of (params, batch, step) on one device or eight
and in one process or several. The loss of a sample is the almost-fair CRPS (Lang et al. 2024)
of its M members against the target, on standardised fields, area- and channel-weighted, summed over
the r rollout steps; the batch loss is its mean over samples. The rollout is a `lax.scan` whose body
is rematerialised (`jax.checkpoint`) so that backward memory stays about one step's activations.
The optimizer is optax AdamW with linear warm-up, cosine decay and global-norm clipping
(Loshchilov & Hutter 2019; the schedule of AIFS and GraphCast training).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from weatherens import grid
from weatherens.config import TrainConfig
from weatherens.errors import InputError
from weatherens.model import noise
from weatherens.model.predictor import Predictor
from weatherens.train import losses


class TrainState(NamedTuple):
    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: optimizer steps taken


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW on a warm-up + cosine schedule, after clipping the global gradient norm."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
        decay_steps=max(cfg.steps, cfg.warmup_steps + 1), end_value=cfg.end_learning_rate)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adamw(schedule, weight_decay=cfg.weight_decay))


def sample_keys(seed: int, step: jax.Array, batch: int, members: int) -> jax.Array:
    """Keys (batch, members) for one optimizer step, from the seed, the step and the global sample index."""
    step_key = jax.random.fold_in(jax.random.key(seed), step)
    per_sample = jax.vmap(lambda b: jax.random.fold_in(step_key, b))(jnp.arange(batch))
    return jax.vmap(lambda k: jax.vmap(lambda j: noise.member_key(k, j))(jnp.arange(members)))(per_sample)


class Objective:
    """The loss of a batch, given the predictor and the training config (static)."""

    def __init__(self, predictor: Predictor, cfg: TrainConfig):
        if cfg.members < 2 and cfg.alpha != 0:
            raise InputError(f"train.members = {cfg.members}: the (almost-)fair CRPS needs at least 2 members")
        self.predictor, self.cfg = predictor, cfg
        self.area_weights = jnp.asarray(grid.latitude_weights(predictor.lat), jnp.float32)
        self.channel_weights = jnp.asarray(
            losses.channel_weights(predictor.channels, cfg.variable_weights, cfg.level_weighting), jnp.float32)

    def ensemble_rollout(self, params, inputs, forcings, member_keys, steps: int):
        """Members' trajectories: inputs (2, C, lat, lon), forcings (>= steps + 2, F, lat, lon),
        member_keys (M,) -> (steps, M, C, lat, lon)."""
        p = self.predictor
        step_fn = jax.vmap(p.step, in_axes=(None, 0, 0, None, None, 0, 0))

        def body(carry, n):
            x_prev, x_now, state = carry
            keys = jax.vmap(lambda k: noise.step_key(k, n))(member_keys)
            x_next, state = step_fn(params, x_prev, x_now, forcings[n + 1], forcings[n + 2], keys, state)
            return (x_now, x_next, state), x_next

        if self.cfg.remat:
            body = jax.checkpoint(body)
        m = member_keys.shape[0]
        x_prev, x_now = (jnp.broadcast_to(x, (m,) + x.shape) for x in (inputs[0], inputs[1]))
        state = jax.vmap(p.initial_noise)(member_keys)
        _, trajectory = jax.lax.scan(body, (x_prev, x_now, state), jnp.arange(steps))
        return trajectory

    def sample_loss(self, params, inputs, forcings, targets, member_keys):
        """Sum over rollout steps of the weighted afCRPS; also per-channel afCRPS (C,) averaged over steps."""
        steps = targets.shape[0]
        trajectory = self.ensemble_rollout(params, inputs, forcings, member_keys, steps)
        norm = self.predictor.normalize
        pointwise = losses.afcrps(norm(trajectory), norm(targets), alpha=self.cfg.alpha, member_axis=1)
        per_step = jax.vmap(lambda x: losses.weighted_mean(x, self.area_weights, self.channel_weights))(pointwise)
        area = self.area_weights[:, None] / self.area_weights.mean()
        per_channel = (pointwise * area).mean(axis=(0, -2, -1))
        return per_step.sum(), per_channel

    def batch_loss(self, params, batch, keys):
        """batch: dict of inputs (B, 2, C, ...), forcings (B, k + 2, F, ...), targets (B, k, C, ...);
        keys (B, M). Returns (mean loss, per-channel afCRPS (C,))."""
        loss, per_channel = jax.vmap(self.sample_loss, in_axes=(None, 0, 0, 0, 0))(
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
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "crps": per_channel}
        return TrainState(params, opt_state, state.step + 1), metrics

    return train_step


def make_eval_step(objective: Objective, seed: int):
    """eval_step(params, batch, index) -> per-channel afCRPS (C,) and loss, with keys from (seed, -1 - index)."""

    def eval_step(params, batch, index):
        keys = sample_keys(seed + 1, index, batch["inputs"].shape[0], objective.cfg.members)
        loss, per_channel = objective.batch_loss(params, batch, keys)
        return {"loss": loss, "crps": per_channel}

    return eval_step


def init_state(predictor: Predictor, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    params = predictor.init_params(jax.random.key(np.uint32(seed)))
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
