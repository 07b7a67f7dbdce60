#!/usr/bin/env python3
"""Diagnose why a checkpoint's ensemble members drift out of the climate (measures, fixes nothing).

    .venv/bin/python scripts/diagnose_drift.py --checkpoint checkpoints/small \
        --world /root/.cache/weatherens/world-T42-aff2d46ece6c.zarr --out diag.json \
        [--inits 8 --members 8 --days 10 --free-days 60 --free-members 8 --seed 0]

Channels reported: z500 (geopotential@500), t850 (temperature@850), t2m (2m_temperature); surface
pressure (sp) for the global-mean mass budget. Truth = the physics world at the same valid times.
Init times: `--inits` 00 UTC dates spread evenly over 2000-06-01 .. 2000-06-20 (test month).

1. Ensembles in four variants, re-implemented here around the network (the package is not edited):
     shipped    the model as it is (latent z and AR(1) noise fields on);
     noise_off  z = 0 and noise fields = 0: deterministic, 1 member;
     fields_off noise fields = 0, latent z on;
     shift_off  every ConditionalLayerNorm `shift` parameter set to 0, all else as shipped.
   At leads 6 h, 1, 3, 5, 10 d:
   (A) spherical-harmonic power ratio member/truth per degree l (mean over inits and members /
       mean over inits): mean ratio over l = 1-3, max |ratio - 1| over l >= 4, mean ratio l = 25-31;
   (B) zonal power ratio at zonal wavenumbers m = 28-32 (rfft over longitude, mean over the
       latitude rows with 30 <= |lat| <= 60);
   (C) stochastic variants: debiased spread/skill sqrt((M+1)/M var/MSE(ens mean)), area-weighted;
       fair CRPS (area-weighted mean) and its ratio to the fair CRPS of a climatological ensemble of
       20 random training-month (Jan-Apr 2000) states, the same for every init (the deterministic
       variant gets its MAE, the CRPS of one member);
   (D) global-mean surface pressure minus the truth's (Pa).
2. One-step increments (6 h) of every variant vs the truth's x(t + 6 h) - x(t): power ratio in
   the bands l = 1-3, 4-10, 11-20, 21-31; the share of the increment that the SHT analysis does
   not see, ||r - S(A(r))||^2 / ||r||^2 area-weighted (S synthesis, A analysis); global-mean sp
   increment (Pa per 6 h).
3. Large-scale sensitivity (noise key and noise state held fixed): the one-step output change
   when x(t - dt) is perturbed by a random field band-limited to l = 15-31 with area rms 1 % of
   each channel's std, or by one band-limited to l = 1-3 of the same rms (x(t) perturbed the
   same way as a reference): power of the change at l = 1-3 and l >= 4, and rms gain. And the
   difference of two members (two keys, same inputs), for all noise on / z only / fields only /
   shift off: its power at l = 1-3 over its total (area mean of d^2), and its l = 0 share
   (global constant) = (area mean d)^2 / area mean d^2.
4. Free runs of `--free-members` members from 2000-04-01T00 for `--free-days` days, in lead
   chunks: over the last 15 days, zonal-mean ensemble-mean t850 (and z500, t2m) minus the truth's
   climatological zonal mean over the whole archive (max |diff| over latitude and the two polar
   rows), global-mean sp minus the truth's archive mean, and the count of non-finite values.

Everything runs on one CPU device (pin the process with taskset); prints a table, writes JSON.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from weatherens import checkpoint, grid
from weatherens.data import era5, pipeline
from weatherens.data import forcings as forcings_lib
from weatherens.infer.ensemble import EnsembleRunner, init_key, member_keys
from weatherens.model import noise
from weatherens.train import losses

from drift_tables import print_tables  # scripts/ is on sys.path when the script runs
from drift_variants import VARIANT_FLAGS, make_rollout, make_step, zero_shift

REPORT = {"z500": "geopotential@500", "t850": "temperature@850", "t2m": "2m_temperature"}
SP = "surface_pressure"
LEADS = {"6h": 1, "1d": 4, "3d": 12, "5d": 20, "10d": 40}
VARIANTS = ("shipped", "noise_off", "fields_off", "shift_off")
DT = np.timedelta64(6, "h")
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------
def fair_crps(members: np.ndarray, truth: np.ndarray, w: np.ndarray) -> float:
    """members (M, lat, lon), truth (lat, lon) -> area-weighted mean fair CRPS (`losses.afcrps`, alpha = 1;
    one member: its absolute error, alpha = 0)."""
    alpha = 1.0 if members.shape[0] > 1 else 0.0
    return float((np.asarray(losses.afcrps(members, truth, alpha, member_axis=0), np.float64) * w).mean())


def zonal_power(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(..., lat, lon) -> (..., nlon//2 + 1) mean over `rows` of |rfft|^2 (norm forward)."""
    f = np.fft.rfft(x[..., rows, :], axis=-1, norm="forward")
    return (np.abs(f) ** 2).mean(-2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--world", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--inits", type=int, default=8)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--days", type=float, default=10)
    ap.add_argument("--free-days", type=float, default=60)
    ap.add_argument("--free-members", type=int, default=8)
    ap.add_argument("--free-variants", default=",".join(VARIANTS),
                    help="comma-separated variants for the free run (shipped is always the one asked for)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    results: dict = {"args": vars(args), "jax_devices": [str(d) for d in jax.devices()]}
    p, params_shipped, meta = checkpoint.load_for_inference(args.checkpoint)
    params_shift, n_shift = zero_shift(params_shipped)
    params_of = {"shipped": params_shipped, "noise_off": params_shipped, "fields_off": params_shipped,
                 "shift_off": params_shift}
    results["model"] = {"config": meta["config"]["model"], "provenance": meta.get("provenance"),
                        "step": meta.get("step"), "shift_leaves_zeroed": n_shift,
                        "increment_filter": getattr(p, "increment_filter", None) is not None,
                        "conserved": [p.channels[i] for i in np.asarray(getattr(p, "conserved", []))]}
    log(f"checkpoint {args.checkpoint}: step {meta.get('step')}, {len(p.channels)} channels, "
        f"lmax {p.sht.lmax}, noise_dim {p.cfg.noise_dim}, noise fields {p.cfg.noise_fields}; "
        f"zeroed {n_shift} shift leaves for shift_off")
    ch = {k: p.channels.index(v) for k, v in REPORT.items()}
    sp_idx = p.channels.index(SP)
    sel = np.asarray([ch[k] for k in REPORT] + [sp_idx], np.int32)  # selected channels for rollouts
    names = list(REPORT)
    lat, lon = p.lat, p.lon
    w = grid.latitude_weights(lat)[:, None] * np.ones(lon.size)
    rows = np.where((np.abs(lat) >= 30) & (np.abs(lat) <= 60))[0]
    std = np.asarray(p.std).ravel()
    sht = p.sht
    lmax = sht.lmax
    pspec = jax.jit(sht.power_spectrum)
    project = jax.jit(lambda x: sht.synthesis(sht.analysis(x)))

    data = meta["config"]["data"]
    ds = era5.open(args.world, data["variables"], data["levels"])
    times_all = ds["time"].values.astype("datetime64[h]")
    log(f"world {args.world}: {times_all[0]} .. {times_all[-1]} ({times_all.size} times)")

    def states(times):
        return pipeline.read_states(ds, data["variables"], np.asarray(times, "datetime64[ns]"))

    def forcing(times):
        out = forcings_lib.compute(np.asarray(times, "datetime64[ns]"), lat, lon, p.forcings)
        return np.asarray(out, np.float32).reshape(len(times), len(p.forcings), lat.size, lon.size)

    # ---------------------------------------------------------------- inits, truth, climatology
    steps = int(round(args.days * 4))
    leads = {k: v for k, v in LEADS.items() if v <= steps}
    offs = np.unique(np.round(np.linspace(0, 19, args.inits)).astype(int))
    inits = np.datetime64("2000-06-01T00", "h") + offs * np.timedelta64(24, "h")
    ni, nm = inits.size, args.members
    log(f"{ni} inits: {[str(t)[:10] for t in inits]}; {nm} members, {steps} steps")
    truth_prev = states(inits - DT)
    truth_now = states(inits)
    truth_lead = np.stack([states(inits + DT * s)[:, sel] for s in range(1, steps + 1)])  # (S, I, K, ..)
    truth_next_full = states(inits + DT)
    forc = forcing(inits[0] + DT * np.arange(-1, steps + 1))  # no seasons/diurnal: same for all inits
    if forc.shape[1] and not all(np.allclose(forcing(t + DT * np.arange(-1, steps + 1)), forc) for t in inits):
        forc_per_init = True
    else:
        forc_per_init = False
    rng = np.random.default_rng(args.seed)
    train_times = times_all[times_all < np.datetime64("2000-05-01T00", "h")]
    clim_times = np.sort(rng.choice(train_times, 20, replace=False))
    clim = states(clim_times)[:, sel]  # (20, K, lat, lon)
    results["inits"] = [str(t) for t in inits]
    results["climatology_times"] = [str(t) for t in clim_times]

    def keys_for(members):
        return jnp.concatenate([member_keys(init_key(args.seed, t), np.arange(members)) for t in inits])

    # ---------------------------------------------------------------- sanity check vs the package
    step_ship = make_step(p, True, True)
    k0 = member_keys(init_key(args.seed, inits[0]), np.arange(2))
    st0 = jax.vmap(p.initial_noise)(k0)
    mine = jax.jit(jax.vmap(step_ship, in_axes=(None, None, None, None, None, 0, 0)))(
        params_shipped, truth_prev[0], truth_now[0], forc[0], forc[1], jax.vmap(lambda k: noise.step_key(k, 0))(k0), st0)[0]
    runner = EnsembleRunner(p, params_shipped, devices=jax.local_devices()[:1])
    _, pkg = next(runner.rollout(truth_prev[0], truth_now[0], forc, k0, 1))
    check = float(np.abs(np.asarray(mine) - pkg[0]).max() / np.abs(pkg[0]).max())
    results["check_vs_EnsembleRunner_max_rel_diff"] = check
    log(f"check: this script's shipped step vs EnsembleRunner, max rel diff {check:.2e}")

    # ---------------------------------------------------------------- 1. ensembles
    ens: dict = {}
    first_step: dict = {}
    for var in VARIANTS:
        use_z, use_f = VARIANT_FLAGS[var]
        m = 1 if var == "noise_off" else nm
        step = make_step(p, use_z, use_f)
        roll = make_rollout(p, step, sel, sp_idx)
        keys = keys_for(m)
        state = jax.vmap(p.initial_noise)(keys)
        xp = jnp.asarray(np.repeat(truth_prev, m, axis=0))
        xn = jnp.asarray(np.repeat(truth_now, m, axis=0))
        t = time.time()
        if forc_per_init:
            raise SystemExit("forcings differ between inits: not supported by this script")
        _, (out, spm, nonfin) = roll(params_of[var], xp, xn, jnp.asarray(forc), keys, state, 0, steps)
        out = np.asarray(out).reshape(steps, ni, m, len(sel), lat.size, lon.size)
        spm = np.asarray(spm).reshape(steps, ni, m)
        log(f"ensemble {var}: {ni}x{m} members x {steps} steps in {time.time() - t:.1f}s; "
            f"non-finite {int(np.asarray(nonfin).sum())}")
        # one full step for the increment diagnostics
        one = jax.jit(jax.vmap(step, in_axes=(None, 0, 0, None, None, 0, 0)))
        x1, _ = one(params_of[var], xp, xn, jnp.asarray(forc[0]), jnp.asarray(forc[1]),
                    jax.vmap(lambda k: noise.step_key(k, 0))(keys), state)
        first_step[var] = np.asarray(x1).reshape(ni, m, len(p.channels), lat.size, lon.size)
        res = {}
        for lname, s in leads.items():
            fc, tr = out[s - 1], truth_lead[s - 1]  # (I, M, K, ..), (I, K, ..)
            pm = np.asarray(pspec(jnp.asarray(fc))).mean((0, 1))  # (K, L+1)
            pt = np.asarray(pspec(jnp.asarray(tr))).mean(0)
            ratio = pm / pt
            zm, zt = zonal_power(fc, rows).mean((0, 1)), zonal_power(tr, rows).mean(0)
            zr = zm / zt
            entry = {}
            for k, name in enumerate(names):
                e = {"sh_ratio_per_l": ratio[k].tolist(), "sh_ratio_l1_3": float(ratio[k, 1:4].mean()),
                     "sh_max_abs_ratio_minus1_l_ge4": float(np.abs(ratio[k, 4:] - 1).max()),
                     "sh_argmax_l_ge4": int(4 + np.argmax(np.abs(ratio[k, 4:] - 1))),
                     "sh_ratio_l25_31": float(ratio[k, 25:32].mean()),
                     "zonal_ratio_m28_32": zr[k, 28:33].tolist(), "zonal_ratio_m28_32_mean": float(zr[k, 28:33].mean())}
                crps = np.mean([fair_crps(fc[i, :, k], tr[i, k], w) for i in range(ni)])
                crps_clim = np.mean([fair_crps(clim[:, k], tr[i, k], w) for i in range(ni)])
                e["crps"] = float(crps)
                e["crps_clim"] = float(crps_clim)
                e["crps_ratio_to_clim"] = float(crps / crps_clim)
                emean = fc[:, :, k].mean(1)
                mse = float(((emean - tr[:, k]) ** 2 * w).mean())
                e["rmse_ens_mean"] = mse ** 0.5
                if m > 1:
                    var_ = float((fc[:, :, k].var(1, ddof=1) * w).mean())
                    e["spread_skill"] = float(np.sqrt((m + 1) / m * var_ / mse))
                entry[name] = e
            sp_f = spm[s - 1].mean()
            sp_t = float(np.mean([grid.area_mean(tr[i, -1], lat) for i in range(ni)]))
            entry["global_mean_sp_minus_truth_Pa"] = float(sp_f - sp_t)
            entry["global_mean_sp_member_std_Pa"] = float(spm[s - 1].std())
            res[lname] = entry
        sp_truth_steps = np.array([[grid.area_mean(truth_lead[s, i, -1], lat) for i in range(ni)] for s in range(steps)])
        res["global_mean_sp_minus_truth_per_step_Pa"] = (spm.mean((1, 2)) - sp_truth_steps.mean(1)).tolist()
        ens[var] = res
        del out
    results["ensemble"] = ens

    # ---------------------------------------------------------------- 2. one-step increments
    inc_truth = truth_next_full - truth_now  # (I, C, ..)
    pt_inc = np.asarray(pspec(jnp.asarray(inc_truth)))  # (I, C, L+1)
    bands = {"l1_3": (1, 4), "l4_10": (4, 11), "l11_20": (11, 21), "l21_31": (21, lmax + 1)}

    def invisible(r):
        r = jnp.asarray(r)
        num = (np.asarray(r - project(r)) ** 2 * w).mean((-2, -1))
        den = (np.asarray(r) ** 2 * w).mean((-2, -1))
        return num / den

    inc = {}
    inv_truth = invisible(inc_truth)  # (I, C)
    for var in VARIANTS:
        r = first_step[var] - truth_now[:, None]  # (I, M, C, ..)
        pm_inc = np.asarray(pspec(jnp.asarray(r)))  # (I, M, C, L+1)
        inv = invisible(r)  # (I, M, C)
        entry = {}
        for name, c in list(ch.items()) + [("sp", sp_idx)]:
            pmv, ptv = pm_inc[:, :, c].mean((0, 1)), pt_inc[:, c].mean(0)
            e = {f"power_ratio_{b}": float(pmv[a:z].sum() / ptv[a:z].sum()) for b, (a, z) in bands.items()}
            e["invisible_share_model"] = float(inv[:, :, c].mean())
            e["invisible_share_truth"] = float(inv_truth[:, c].mean())
            e["rms_model"] = float(np.sqrt((r[:, :, c] ** 2 * w).mean()))
            e["rms_truth"] = float(np.sqrt((inc_truth[:, c] ** 2 * w).mean()))
            entry[name] = e
        gm_m = np.array([[grid.area_mean(r[i, j, sp_idx], lat) for j in range(r.shape[1])] for i in range(ni)])
        gm_t = np.array([grid.area_mean(inc_truth[i, sp_idx], lat) for i in range(ni)])
        entry["global_mean_sp_increment_model_Pa"] = float(gm_m.mean())
        entry["global_mean_sp_increment_model_member_std_Pa"] = float(gm_m.std())
        entry["global_mean_sp_increment_truth_Pa"] = float(gm_t.mean())
        entry["invisible_share_all_channels_model"] = float(inv.mean())
        entry["invisible_share_all_channels_truth"] = float(inv_truth.mean())
        inc[var] = entry
    results["increment"] = inc
    log("increments done")

    # ---------------------------------------------------------------- 3. sensitivity of l = 1..3
    def band_field(key, lo, hi, c):
        """(c, lat, lon) random fields with white coefficients on degrees lo..hi, area rms 1."""
        kr, ki = jax.random.split(key)
        shape = (c, lmax + 1, lmax + 1)
        l = np.arange(lmax + 1)[:, None]
        m = np.arange(lmax + 1)[None, :]
        mask = jnp.asarray(((l >= lo) & (l <= hi) & (m <= l)).astype(np.float32))
        re = jax.random.normal(kr, shape) * mask
        im = jax.random.normal(ki, shape) * mask * (m > 0)
        f = np.asarray(sht.synthesis(jax.lax.complex(re, im)))
        return f / np.sqrt((f ** 2 * w).mean((-2, -1), keepdims=True))

    step_ship_v = jax.jit(jax.vmap(step_ship, in_axes=(None, 0, 0, None, None, 0, 0)))
    keys1 = keys_for(1)
    skeys = jax.vmap(lambda k: noise.step_key(k, 0))(keys1)
    state1 = jax.vmap(p.initial_noise)(keys1)
    base = np.asarray(step_ship_v(params_shipped, truth_prev, truth_now, forc[0], forc[1], skeys, state1)[0])
    amp = 0.01 * std[:, None, None]
    sens = {}
    pkey = jax.random.key(args.seed + 12345)
    for target in ("x_prev", "x_now"):
        for bname, (lo, hi) in {"l15_31": (15, 31), "l1_3": (1, 3)}.items():
            pert = np.stack([band_field(jax.random.fold_in(pkey, 100 * i + lo), lo, hi, len(p.channels))
                             for i in range(ni)]) * amp  # (I, C, ..)
            xp_ = truth_prev + (pert if target == "x_prev" else 0)
            xn_ = truth_now + (pert if target == "x_now" else 0)
            out = np.asarray(step_ship_v(params_shipped, xp_, xn_, forc[0], forc[1], skeys, state1)[0])
            d = out - base
            pd = np.asarray(pspec(jnp.asarray(d))).mean(0)  # (C, L+1)
            pin = np.asarray(pspec(jnp.asarray(pert))).mean(0)
            entry = {}
            for name, c in list(ch.items()) + [("sp", sp_idx)]:
                tot = float((d[:, c] ** 2 * w).mean())
                entry[name] = {"out_power_l1_3": float(pd[c, 1:4].sum()), "out_power_l_ge4": float(pd[c, 4:].sum()),
                               "out_power_l0": float(pd[c, 0]), "out_total_grid": tot,
                               "out_share_l1_3": float(pd[c, 1:4].sum() / tot),
                               "in_power_l1_3": float(pin[c, 1:4].sum()), "in_total": float(pin[c].sum()),
                               "rms_gain": float(np.sqrt(tot / (pert[:, c] ** 2 * w).mean()))}
            sens[f"{target}_{bname}"] = entry
    log("perturbation responses done")

    # two members, same inputs
    two = {}
    ka = keys_for(2).reshape(ni, 2)
    for label, (var, use_z, use_f) in {"all_noise": ("shipped", True, True), "z_only": ("shipped", True, False),
                                       "fields_only": ("shipped", False, True),
                                       "shift_off": ("shift_off", True, True)}.items():
        stp = jax.jit(jax.vmap(make_step(p, use_z, use_f), in_axes=(None, 0, 0, None, None, 0, 0)))
        outs = []
        for j in range(2):
            kk = ka[:, j]
            outs.append(np.asarray(stp(params_of[var], truth_prev, truth_now, forc[0], forc[1],
                                       jax.vmap(lambda k: noise.step_key(k, 0))(kk),
                                       jax.vmap(p.initial_noise)(kk))[0]))
        d = outs[0] - outs[1]
        pd = np.asarray(pspec(jnp.asarray(d))).mean(0)
        entry = {}
        for name, c in list(ch.items()) + [("sp", sp_idx)]:
            tot = float((d[:, c] ** 2 * w).mean())
            gm = np.array([grid.area_mean(d[i, c], lat) for i in range(ni)])
            entry[name] = {"share_l1_3": float(pd[c, 1:4].sum() / tot), "share_l0": float((gm ** 2).mean() / tot),
                           "rms": tot ** 0.5, "rms_global_mean": float(np.sqrt((gm ** 2).mean()))}
        entry["share_l0_per_channel"] = {
            c: float(np.mean([grid.area_mean(d[i, k], lat) ** 2 for i in range(ni)]) / (d[:, k] ** 2 * w).mean())
            for k, c in enumerate(p.channels)}
        two[label] = entry
    results["sensitivity"] = sens
    results["two_members"] = two
    log("two-member differences done")

    # ---------------------------------------------------------------- 4. free runs
    fsteps = int(round(args.free_days * 4))
    f0 = np.datetime64("2000-04-01T00", "h")
    last = f0 + DT * fsteps
    if last > times_all[-1]:
        raise SystemExit(f"free run ends {last}, after the world's last time {times_all[-1]}")
    win = min(fsteps, 60)  # last 15 days
    fx_prev, fx_now = states([f0 - DT])[0], states([f0])[0]
    fforc = forcing(f0 + DT * np.arange(-1, fsteps + 1))
    # truth climatology over the whole archive (Jan-Jun), in blocks
    zm_sum = np.zeros((len(sel), lat.size))
    sp_all = []
    for a in range(0, times_all.size, 120):
        blk = states(times_all[a:a + 120])[:, sel]
        zm_sum += blk.mean(-1).sum(0)
        sp_all.append([grid.area_mean(b[-1], lat) for b in blk])
    clim_zm = zm_sum / times_all.size
    sp_truth_mean = float(np.mean(np.concatenate(sp_all)))
    truth_win = states(f0 + DT * np.arange(fsteps - win + 1, fsteps + 1))[:, sel]
    free = {"window_days": [float((fsteps - win + 1) / 4), float(fsteps / 4)], "truth_global_mean_sp_archive_Pa": sp_truth_mean,
            "truth_global_mean_sp_window_Pa": float(np.mean([grid.area_mean(b[-1], lat) for b in truth_win]))}
    chunk = 20
    for var in [v for v in args.free_variants.split(",") if v]:
        use_z, use_f = VARIANT_FLAGS[var]
        m = 1 if var == "noise_off" else args.free_members
        roll = make_rollout(p, make_step(p, use_z, use_f), sel, sp_idx)
        keys = member_keys(init_key(args.seed, f0), np.arange(m))
        carry = (jnp.asarray(np.repeat(fx_prev[None], m, 0)), jnp.asarray(np.repeat(fx_now[None], m, 0)),
                 jax.vmap(p.initial_noise)(keys))
        t = time.time()
        zm_acc = np.zeros((len(sel), lat.size))
        n_acc = 0
        sp_series, t850_pole_series, nonfin = [], [], 0
        for start in range(0, fsteps, chunk):
            n = min(chunk, fsteps - start)
            carry, (out, spm, nf) = roll(params_of[var], carry[0], carry[1], jnp.asarray(fforc[start:start + n + 2]),
                                          keys, carry[2], start, n)
            out = np.asarray(out)  # (n, M, K, lat, lon)
            nonfin += int(np.asarray(nf).sum())
            sp_series += np.asarray(spm).mean(1).tolist()
            zmean = out.mean(1).mean(-1)  # ensemble-mean zonal mean (n, K, lat)
            t850_pole_series += zmean[:, names.index("t850"), [0, -1]].tolist()
            for q in range(n):
                if start + q + 1 > fsteps - win:
                    zm_acc += zmean[q]
                    n_acc += 1
        zm = zm_acc / n_acc
        diff = zm - clim_zm
        entry = {"members": m, "nonfinite_count": nonfin, "seconds": time.time() - t}
        for name in names:
            k = names.index(name)
            entry[name] = {"zonal_mean_minus_clim": diff[k].tolist(), "max_abs": float(np.nanmax(np.abs(diff[k]))),
                           "argmax_lat": float(lat[int(np.nanargmax(np.abs(diff[k])))]),
                           "south_pole_row": float(diff[k, 0]), "north_pole_row": float(diff[k, -1])}
        sp_series = np.asarray(sp_series)
        entry["global_mean_sp_minus_truth_Pa"] = float(np.mean(sp_series[fsteps - win:]) - sp_truth_mean)
        entry["global_mean_sp_minus_truth_daily_Pa"] = (sp_series[3::4] - sp_truth_mean).tolist()
        entry["t850_zonal_mean_polar_rows_daily_K"] = np.asarray(t850_pole_series)[3::4].tolist()
        entry["t850_clim_polar_rows_K"] = [float(clim_zm[names.index("t850"), 0]), float(clim_zm[names.index("t850"), -1])]
        free[var] = entry
        log(f"free run {var}: {m} members x {fsteps} steps in {entry['seconds']:.1f}s, non-finite {nonfin}")
    results["free_run"] = free
    results["runtime_s"] = time.time() - T0

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print_tables(results, names, leads)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
