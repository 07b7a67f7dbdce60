"""Training mechanisms by value: per-phase learning-rate schedules, the loss averaged over rollout
steps with gradient through the last k only, the weights' moving average (and its checkpoint), and
the long-lead validation's scores against brute force."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_model import LAT, TINY, make_predictor, perturbed, state
from weatherens import config, grid
from weatherens.model import noise
from weatherens.train import losses, validation
from weatherens.train import step as step_lib

PHASES = config.TrainConfig(steps=100, rollout_lengths=(1, 2), rollout_starts=(0, 60), phase_learning_rates=(1e-3, 2e-4),
                            phase_warmup_steps=(10, 5), end_learning_rate=1e-5)


def test_each_phase_has_its_own_warmup_and_cosine_decay():
    lr = step_lib.learning_rate_schedule(PHASES)
    at = lambda s: float(lr(s))  # noqa: E731
    assert at(0) == 0.0 and at(5) == pytest.approx(5e-4) and at(10) == pytest.approx(1e-3)
    assert at(35) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-5)  # half-way through phase 1's decay
    assert at(60) == 0.0 and at(65) == pytest.approx(2e-4)  # phase 2 warms up afresh
    assert at(100) == pytest.approx(1e-5, rel=1e-4)
    longer = dataclasses.replace(PHASES, steps=150, rollout_lengths=(1, 2, 4), rollout_starts=(0, 60, 100),
                                 phase_learning_rates=(1e-3, 2e-4, 1e-4), phase_warmup_steps=(10, 5, 5))
    extended = step_lib.learning_rate_schedule(longer)
    np.testing.assert_allclose([float(extended(s)) for s in range(100)], [at(s) for s in range(100)], rtol=1e-6)


def test_one_schedule_without_phases_is_warmup_cosine_over_all_steps():
    cfg = config.TrainConfig(steps=200, warmup_steps=20, learning_rate=1e-3, end_learning_rate=1e-5)
    lr = step_lib.learning_rate_schedule(cfg)
    assert float(lr(20)) == pytest.approx(1e-3) and float(lr(200)) == pytest.approx(1e-5, rel=1e-4)
    assert float(lr(110)) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-5)


def test_phase_schedule_config_is_checked():
    with pytest.raises(config.ConfigError, match="phase_learning_rates"):
        config.TrainConfig(rollout_lengths=(1, 2), rollout_starts=(0, 5), phase_learning_rates=(1e-3,),
                           phase_warmup_steps=(1,))
    with pytest.raises(config.ConfigError, match="phase_warmup_steps"):
        config.TrainConfig(phase_learning_rates=(1e-3,), phase_warmup_steps=())


@pytest.fixture(scope="module")
def rollout_case():
    p = make_predictor()
    params = perturbed(p.init_params(jax.random.key(0)), jax.random.key(7), scale=0.05)
    inputs = jnp.stack([state(0), state(1)])
    forcings = jnp.full((5, 1, 32, 64), 600.0)
    targets = jnp.stack([state(2), state(3), state(4)])
    keys = jax.vmap(lambda j: noise.member_key(jax.random.key(3), j))(jnp.arange(2))
    return p, params, inputs, forcings, targets, keys


def _reference_loss(p, objective, params, inputs, forcings, targets, keys, free):
    """Mean over steps of the per-step loss, the first `free` steps from parameters held fixed."""
    frozen = jax.lax.stop_gradient(params)
    x_prev, x_now = (jnp.broadcast_to(x, (2,) + x.shape) for x in inputs)
    noise_state = jax.vmap(p.initial_noise)(keys)
    total = 0.0
    for n in range(targets.shape[0]):
        weights = frozen if n < free else params
        step_keys = jax.vmap(lambda k: noise.step_key(k, n))(keys)
        x_next, noise_state = jax.vmap(p.step, in_axes=(None, 0, 0, None, None, 0, 0))(
            weights, x_prev, x_now, forcings[n + 1], forcings[n + 2], step_keys, noise_state)
        if n < free:
            x_next, noise_state = jax.lax.stop_gradient((x_next, noise_state))
        crps = losses.afcrps(p.normalize(x_next), p.normalize(targets[n]), alpha=0.95, member_axis=0)
        total = total + losses.weighted_mean(crps, objective.area_weights, objective.channel_weights)
        x_prev, x_now = x_now, x_next
    return total / targets.shape[0]


@pytest.mark.parametrize("gradient_steps", [0, 1])
def test_loss_is_the_step_mean_and_gradient_flows_through_the_last_k_steps(rollout_case, gradient_steps):
    p, params, inputs, forcings, targets, keys = rollout_case
    cfg = config.TrainConfig(members=2, gradient_steps=gradient_steps, remat=False)
    objective = step_lib.Objective(p, cfg)
    loss_fn = lambda w: objective.sample_loss(w, inputs, forcings, targets, keys)[0]  # noqa: E731
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    free = 3 - gradient_steps if gradient_steps else 0
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(
        lambda w: _reference_loss(p, objective, w, inputs, forcings, targets, keys, free)))(params)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-6 * max(1.0, float(jnp.abs(b).max())))
    if gradient_steps:
        full = jax.jit(jax.grad(lambda w: _reference_loss(p, objective, w, inputs, forcings, targets, keys, 0)))(params)
        gap = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(full)))
        assert gap > 1e-3 * max(float(jnp.abs(b).max()) for b in jax.tree.leaves(full))  # truncation changes it


def test_moving_average_by_hand():
    assert float(step_lib.ema_decay_at(0.9, jnp.asarray(0))) == pytest.approx(0.1)
    assert float(step_lib.ema_decay_at(0.9, jnp.asarray(100))) == pytest.approx(0.9)
    ema = {"w": jnp.asarray([1.0, 2.0])}
    got = step_lib.ema_update(ema, {"w": jnp.asarray([3.0, 0.0])}, 0.9, jnp.asarray(100))
    np.testing.assert_allclose(got["w"], [0.9 * 1 + 0.1 * 3, 0.9 * 2], rtol=1e-6)
    assert step_lib.ema_update(None, {"w": jnp.zeros(2)}, 0.0, jnp.asarray(0)) is None


def test_train_steps_keep_the_average_of_their_parameters(rollout_case):
    p, params, inputs, forcings, targets, keys = rollout_case
    cfg = config.TrainConfig(members=2, steps=4, warmup_steps=1, ema_decay=0.5)
    optimizer = step_lib.make_optimizer(cfg)
    train_step = jax.jit(step_lib.make_train_step(step_lib.Objective(p, cfg), optimizer, seed=0))
    state_ = step_lib.init_state(p, optimizer, 0, ema=True)
    batch = {"inputs": inputs[None], "forcings": forcings[None, :3], "targets": targets[None, :1]}
    expected = state_.params
    for n in range(3):
        state_, _ = train_step(state_, batch)
        d = min(0.5, (1 + n) / (10 + n))
        expected = jax.tree.map(lambda e, w: d * e + (1 - d) * w, expected, state_.params)
    for a, b in zip(jax.tree.leaves(state_.ema), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert state_.inference_params() is state_.ema


def _brute_fair_crps(ens, y):
    m = ens.shape[0]
    skill = np.abs(ens - y).mean(axis=0)
    pairs = sum(np.abs(ens[i] - ens[j]) for i in range(m) for j in range(m))
    return skill - pairs / (2 * m * (m - 1))


def test_long_lead_validation_against_brute_force(rollout_case):
    p, params, _, _, _, _ = rollout_case
    rng = np.random.default_rng(0)
    scale = np.array([3e3, 15, 20])[:, None, None]
    base = np.array([5e4, 250.0, 280.0])[:, None, None]
    states = lambda *shape: (base + scale * rng.standard_normal(shape + (3, 32, 64))).astype(np.float32)  # noqa: E731
    data = validation.ValidationSet(init_times=np.array(["2000-01-01", "2000-01-02"], "datetime64[ns]"),
                                    inputs=states(2, 2), forcings=np.full((2, 5, 1, 32, 64), 600.0, np.float32),
                                    truth=states(2, 2), lead_steps=(1, 3), climatology=states(5))
    objective = step_lib.Objective(p, config.TrainConfig(members=3))
    runner = validation.LongLeadValidation(objective, data, members=3, seed=4, hours_per_step=6)
    scores = runner(params)
    w = grid.latitude_weights(LAT)[:, None] / 64 / 32
    crps, var, err = [], [], []
    one_step = jax.jit(p.step)
    for n in range(2):  # members stepped by hand
        ens = []
        for j in range(3):
            key = runner.keys[n, j]
            x_prev, x_now, s = jnp.asarray(data.inputs[n, 0]), jnp.asarray(data.inputs[n, 1]), p.initial_noise(key)
            traj = []
            for k in range(3):
                x_next, s = one_step(params, x_prev, x_now, data.forcings[n, k + 1], data.forcings[n, k + 2],
                                   noise.step_key(key, k), s)
                traj.append(np.asarray(x_next, np.float64))
                x_prev, x_now = x_now, x_next
            ens.append(np.stack([traj[0], traj[2]]))
        ens = np.stack(ens)  # (M, K, C, lat, lon)
        y = data.truth[n].astype(np.float64)
        crps.append([(_brute_fair_crps(ens[:, k], y[k]) * w).sum(axis=(-2, -1)) for k in range(2)])
        var.append((ens.var(axis=0, ddof=1) * w).sum(axis=(-2, -1)))
        err.append(((ens.mean(axis=0) - y) ** 2 * w).sum(axis=(-2, -1)))
    clim = np.mean([[(_brute_fair_crps(data.climatology.astype(np.float64), data.truth[n, k]) * w).sum(axis=(-2, -1))
                     for k in range(2)] for n in range(2)], axis=0)
    crps, var, err = (np.mean(a, axis=0) for a in (crps, var, err))
    assert scores["leads_h"] == [6, 18]
    for k, lead in enumerate(("6h", "18h")):
        for c, name in enumerate(p.channels):
            assert scores["crps"][lead][name] == pytest.approx(crps[k, c], rel=2e-3)
            assert scores["crps_vs_climatology"][lead][name] == pytest.approx(crps[k, c] / clim[k, c], rel=2e-3)
            assert scores["ssr"][lead][name] == pytest.approx(np.sqrt(4 / 3 * var[k, c] / err[k, c]), rel=2e-3)
    assert scores["score"] == pytest.approx(np.mean(crps / clim), rel=2e-3)


def test_summary_spectrum_ratios_by_hand():
    member = np.ones((1, 1, 8))
    truth = np.ones((1, 1, 8))
    member[0, 0, 1:4] = [2.0, 3.0, 4.0]  # l = 1..3: mean ratio 3
    member[0, 0, 6] = 0.7  # l = 6: |0.7 - 1| = 0.3, the worst at l >= 4
    out = validation.summarize(("x",), (24,), 4, np.array([[0.5]]), np.array([[2.0]]), np.array([[1.0]]),
                               np.array([[1.25]]), member, truth)
    assert out["crps_vs_climatology"]["24h"]["x"] == 0.25 and out["score"] == 0.25
    assert out["ssr"]["24h"]["x"] == pytest.approx(1.0)  # sqrt(5/4 * 1 / 1.25)
    assert out["spectrum_large"]["24h"]["x"] == pytest.approx(3.0)
    assert out["spectrum_worst"]["24h"]["x"] == pytest.approx(0.3)


@pytest.mark.parametrize("steps, gradient_steps, rematerialised", [(1, 0, False), (3, 1, False), (3, 0, True), (3, 2, True)])
def test_rematerialisation_only_where_several_steps_carry_a_gradient(rollout_case, steps, gradient_steps, rematerialised):
    p, params, inputs, forcings, targets, keys = rollout_case
    objective = step_lib.Objective(p, config.TrainConfig(members=2, gradient_steps=gradient_steps, remat=True))
    loss_fn = lambda w: objective.sample_loss(w, inputs, forcings, targets[:steps], keys)[0]  # noqa: E731
    jaxpr = str(jax.make_jaxpr(jax.grad(loss_fn))(params))
    assert ("checkpoint" in jaxpr or "remat" in jaxpr) == rematerialised
