"""Paired per-init comparison of two ensembles: hand-computed statistics and a brute-force CRPS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from weatherens import grid
from weatherens.verify import paired


def test_paired_difference_by_hand():
    r = paired.paired_difference(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0]))
    # d = (-1, 0, -2): mean -1, s.d. 1, s.e. 1/sqrt(3), t = -sqrt(3); a lower in 2 of 3
    assert (r.a_better, r.n) == (2, 3)
    assert r.ratio_of_means == pytest.approx(6 / 9)
    assert r.mean == pytest.approx(-1.0)
    assert r.standard_error == pytest.approx(1 / np.sqrt(3))
    assert r.t == pytest.approx(-np.sqrt(3))
    with pytest.raises(ValueError, match="n >= 2"):
        paired.paired_difference(np.array([1.0]), np.array([2.0]))


def test_per_init_crps_fair_equals_a_brute_force_loop():
    rng = np.random.default_rng(0)
    inits = pd.date_range("2000-01-01", periods=3, freq="5D").values
    leads = np.array([6, 12], "timedelta64[h]").astype("timedelta64[ns]")
    lat, lon, members = np.array([-60.0, -20.0, 20.0, 60.0]), np.arange(0.0, 360.0, 45.0), 4
    fc = xr.Dataset({"temperature": (("time", "prediction_timedelta", "number", "level", "latitude", "longitude"),
                                     rng.normal(size=(3, 2, members, 2, 4, 8)).astype(np.float32))},
                    coords={"time": inits, "prediction_timedelta": leads, "number": np.arange(members),
                            "level": [500, 850], "latitude": lat, "longitude": lon})
    times = pd.date_range("2000-01-01", "2000-01-12", freq="6h").values
    truth = xr.Dataset({"temperature": (("time", "level", "latitude", "longitude"),
                                        rng.normal(size=(len(times), 2, 4, 8)))},
                       coords={"time": times, "level": [500, 850], "latitude": lat, "longitude": lon})
    got = paired.per_init_crps_fair(fc, truth, "temperature", 850, leads[1])
    w = grid.latitude_weights(lat)
    for i, t0 in enumerate(inits):
        x = fc["temperature"].values[i, 1, :, 1].astype(np.float64)  # (M, lat, lon)
        y = truth["temperature"].sel(time=t0 + leads[1], level=850).values
        crps = np.zeros((4, 8))
        for a in range(4):
            for b in range(8):
                skill = np.mean(np.abs(x[:, a, b] - y[a, b]))
                spread = sum(abs(x[j, a, b] - x[k, a, b]) for j in range(members) for k in range(members))
                crps[a, b] = skill - spread / (2 * members * (members - 1))
        assert got[i] == pytest.approx(np.mean(crps * w[:, None]), rel=1e-6)


def _ar1(rng, rho: float, shape: tuple[int, ...], mu: float = 0.0) -> np.ndarray:
    """Stationary AR(1) series along the last axis: x_i = rho x_{i-1} + e_i, e ~ N(0, 1), var x = 1/(1-rho^2)."""
    e = rng.normal(size=shape)
    x = np.empty(shape)
    x[..., 0] = e[..., 0] / np.sqrt(1 - rho**2)
    for i in range(1, shape[-1]):
        x[..., i] = rho * x[..., i - 1] + e[..., i]
    return mu + x


def test_mean_interval_by_hand():
    r = paired.mean_interval(np.array([0.0, 2.0, 5.0, 4.0, 4.0]))
    # mean 3, deviations (-3, -1, 2, 1, 1): sum of squares 16, lag-1 products 3 - 2 + 2 + 1 = 4 -> rho 1/4.
    # s^2 = 16/4 = 4; inflation (1 + 1/4)/(1 - 1/4) = 5/3 -> s.e.^2 = 4/5 * 5/3 = 4/3;
    # n_eff = 5 (3/4)/(5/4) = 3 -> 2 degrees of freedom, t_{0.975,2} = 0.95/sqrt(2 * 0.975 * 0.025) = 4.302653;
    # half width 4.302653 * 2/sqrt(3) = 4.968275
    assert (r.n, r.mean, r.rho, r.n_eff) == (5, pytest.approx(3.0), pytest.approx(0.25), pytest.approx(3.0))
    assert r.standard_error == pytest.approx(2 / np.sqrt(3))
    assert (r.low, r.high) == (pytest.approx(3 - 4.968275, abs=1e-6), pytest.approx(3 + 4.968275, abs=1e-6))

    r = paired.mean_interval(np.array([3.0, 1.0, 3.0, 1.0]))
    # deviations (1, -1, 1, -1): lag-1 sum -3 over 4 -> rho -3/4, clipped to 0: n_eff = n = 4, 3 d.o.f.;
    # s^2 = 4/3, s.e. = sqrt(4/3 / 4) = 1/sqrt(3); t_{0.975,3} = 3.182446 -> half width 1.837386
    assert (r.rho, r.n_eff) == (0.0, 4.0)
    assert (r.low, r.high) == (pytest.approx(2 - 1.837386, abs=1e-6), pytest.approx(2 + 1.837386, abs=1e-6))

    r = paired.mean_interval(np.array([0.0, 2.0, 5.0, np.nan, 4.0, 4.0]))
    # the NaN is dropped (n = 5, same mean and s as above) and its neighbours are not paired: lag-1 products
    # (-3)(-1) + (-1)(2) + (1)(1) = 2 -> rho 2/16 = 1/8, n_eff = 5 (7/8)/(9/8) = 35/9, s.e. = sqrt(4 / n_eff)
    assert (r.n, r.rho, r.n_eff) == (5, pytest.approx(1 / 8), pytest.approx(35 / 9))
    half = stats.t.ppf(0.975, 35 / 9 - 1) * np.sqrt(36 / 35)
    assert (r.low, r.high) == (pytest.approx(3 - half), pytest.approx(3 + half))

    smooth = paired.mean_interval(np.arange(200.0))  # a trend: lag-1 autocorrelation 0.985 -> clipped
    assert smooth.rho == paired.MAX_RHO
    assert paired.mean_interval(np.ones(6)).standard_error == 0.0  # no spread: rho 0/0 taken as 0
    assert np.isnan(paired.mean_interval(np.array([1.0, np.nan])).low)  # one value: no interval


def test_ratio_interval_by_hand():
    a = np.array([10.0, 12.0, 15.0, 14.0, 14.0, np.nan, 9.0])
    b = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 8.0, np.nan])
    r = paired.ratio_interval(a, b)
    # the last two pairs dropped; d = (0, 2, 5, 4, 4) as in test_mean_interval_by_hand, mean(b) = 10:
    # ratio 13/10, interval 1 + (3 -/+ 4.968275)/10
    assert (r.ratio, r.difference.n) == (pytest.approx(1.3), 5)
    assert (r.low, r.high) == (pytest.approx(0.8031725, abs=1e-7), pytest.approx(1.7968275, abs=1e-7))
    assert not r.significant

    r = paired.ratio_interval(np.array([23.0, 21.0, 23.0, 21.0]), np.full(4, 20.0))
    # d = (3, 1, 3, 1): mean 2 -/+ 1.837386, mean(b) 20 -> 1.1 -/+ 0.0918693: excludes 1
    assert (r.low, r.high) == (pytest.approx(1.1 - 0.0918693, abs=1e-7), pytest.approx(1.1 + 0.0918693, abs=1e-7))
    assert r.significant
    assert paired.ratio_interval(np.full(4, 20.0), np.array([23.0, 21.0, 23.0, 21.0])).significant  # a better
    with pytest.raises(ValueError, match="equal"):
        paired.ratio_interval(np.ones(3), np.ones(4))


def test_t_interval_agrees_with_a_brute_force_iid_bootstrap():
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 1.0, 400)
    r = paired.mean_interval(d)
    assert r.rho == 0.0  # this sample's lag-1 autocorrelation is negative: no inflation
    means = np.empty(4000)
    for k in range(means.size):  # plain bootstrap: n draws with replacement
        means[k] = d[rng.integers(0, d.size, d.size)].mean()
    low, high = np.quantile(means, [0.025, 0.975])
    width = r.high - r.low
    assert width == pytest.approx(high - low, rel=0.04)
    assert abs(r.low - low) < 0.04 * width and abs(r.high - high) < 0.04 * width


def _circular_block_bootstrap_means(d: np.ndarray, block: int, n_boot: int, rng) -> np.ndarray:
    """Brute force: each replicate joins blocks of `block` consecutive values (wrapping) from random starts."""
    means = np.empty(n_boot)
    for k in range(n_boot):
        idx: list[int] = []
        while len(idx) < d.size:
            start = int(rng.integers(0, d.size))
            idx.extend((start + j) % d.size for j in range(block))
        means[k] = d[np.array(idx[: d.size])].mean()
    return means


def test_ar1_inflated_interval_agrees_with_a_brute_force_block_bootstrap():
    rng = np.random.default_rng(1)
    rho, n, series = 0.6, 400, 8
    d = _ar1(rng, rho, (series, n), mu=0.2)
    r = paired.mean_interval(d)  # all 8 at once: (8,) fields
    ratios = []
    for x in d:  # blocks of 20 = 12 e-folding lengths of the autocorrelation (1/-ln 0.6 = 2 lags)
        low, high = np.quantile(_circular_block_bootstrap_means(x, 20, 1000, rng), [0.025, 0.975])
        ratios.append(high - low)
    ratio = np.mean(r.high - r.low) / np.mean(ratios)
    # The block bootstrap's variance is biased low by ~ 2 sum_k k rho^k / (l sum_k rho^|k|) + l / n ~ 15 % here
    # (Künsch 1989), i.e. widths ~8 % short, and one series' estimate scatters by ~10 %: averaged over 8
    # series the widths agree to 15-20 %, where a missing inflation (width ratio 0.5) or a squared one fails.
    assert 0.85 < ratio < 1.2
    # against the exact AR(1) value: s.d. of the mean = sqrt(var x (1 + rho) / ((1 - rho) n)), var x = 1/(1-rho^2)
    exact = np.sqrt(1 / (1 - rho**2) * (1 + rho) / (1 - rho) / n)
    assert np.mean(r.standard_error) == pytest.approx(exact, rel=0.1)
    naive = np.array([d_.std(ddof=1) / np.sqrt(n) for d_ in d])
    assert np.mean(r.standard_error / naive) > 1.7  # inflation sqrt(1.6/0.4) = 2 at the true rho


def test_ar1_interval_covers_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    x = _ar1(rng, 0.5, (1000, 60), mu=1.0)
    r = paired.mean_interval(x)
    coverage = np.mean((r.low <= 1.0) & (1.0 <= r.high))
    # rho from 60 values is biased low by ~(1 + 4 rho)/n = 0.05, so coverage falls a little short of 0.95
    assert 0.90 <= coverage <= 0.98
    half = 2.0 * x.std(axis=1, ddof=1) / np.sqrt(60)  # the uninflated interval covers ~74 %
    assert np.mean(np.abs(x.mean(axis=1) - 1.0) <= half) < 0.85


def test_moving_block_bootstrap_matches_brute_force_and_keeps_pairs():
    rng = np.random.default_rng(3)
    x = _ar1(rng, 0.6, (300,))
    low, high = paired.moving_block_bootstrap(lambda s: s.mean(-1), (x,), block=15, n_boot=4000, seed=1)
    brute = np.quantile(_circular_block_bootstrap_means(x, 15, 4000, rng), [0.025, 0.975])
    assert high - low == pytest.approx(brute[1] - brute[0], rel=0.06)
    assert (low + high) / 2 == pytest.approx(brute.mean(), abs=0.06 * (high - low))
    # both series resampled with the same blocks: mean(a) - mean(b) of a == b is 0 in every replicate
    y = rng.normal(size=300)
    assert paired.moving_block_bootstrap(lambda a, b: a.mean(-1) - b.mean(-1), (y, y.copy())) == (0.0, 0.0)
    assert paired.default_block(60) == 4 and paired.default_block(64) == 4 and paired.default_block(400) == 8
    for kw in (dict(block=0), dict(block=301)):
        with pytest.raises(ValueError, match="block"):
            paired.moving_block_bootstrap(lambda s: s.mean(-1), (x,), **kw)


def test_skill_fraction_exact_values_and_intervals():
    rng = np.random.default_rng(4)
    clim = 3.0 + rng.normal(0, 0.5, 100)
    limit = clim - 1.0 + rng.normal(0, 0.1, 100)
    assert paired.skill_fraction(clim, clim.copy(), limit)[:3] == (0.0, 0.0, 0.0)  # ml = clim
    assert paired.skill_fraction(clim, limit.copy(), limit)[:3] == (1.0, 1.0, 1.0)  # ml = limit
    widths = []
    for n in (40, 400):
        c = 3.0 + _ar1(rng, 0.4, (n,)) * 0.5
        lim = c - 1.0 + rng.normal(0, 0.2, n)
        ml = c - 0.6 + rng.normal(0, 0.2, n)
        ml[5] = np.nan  # a missing init drops the triple
        s = paired.skill_fraction(c, ml, lim)
        keep = np.isfinite(ml)
        assert s.n == n - 1
        assert s.value == pytest.approx((c[keep].mean() - ml[keep].mean()) / (c[keep].mean() - lim[keep].mean()))
        assert s.low < s.value < s.high and 0.4 < s.value < 0.8
        widths.append(s.high - s.low)
    assert widths[1] < 0.5 * widths[0]  # ~ 1/sqrt(10) with 10 times the inits


def test_compare_equals_ratio_interval_elementwise():
    rng = np.random.default_rng(5)
    inits = pd.date_range("2020-01-01", periods=40, freq="60h").values
    leads = np.array([1, 5, 10], "timedelta64[D]").astype("timedelta64[ns]")
    base = 2.0 + _ar1(rng, 0.5, (3, 2, 40)) * 0.3  # (lead, region, init)
    a = base * (1 + np.array([-0.05, 0.0, 0.02])[:, None, None]) + rng.normal(0, 0.05, (3, 2, 40))
    a[2, :, -4:] = np.nan  # the longest lead has no truth for the last inits
    fa = xr.DataArray(a, dims=("lead_time", "region", "init_time"),
                      coords={"lead_time": leads, "region": ["global", "tropics"], "init_time": inits,
                              "metric": "crps_fair"})
    fb = xr.DataArray(base.transpose(2, 1, 0), dims=("init_time", "region", "lead_time"),
                      coords={"init_time": inits, "region": ["global", "tropics"], "lead_time": leads,
                              "metric": "crps"})
    extra = fb.isel(init_time=[-1]).assign_coords(init_time=[inits[-1] + np.timedelta64(60, "h")])
    table = paired.compare(fa, xr.concat([fb, extra], "init_time"))  # an init only b has is not paired
    assert dict(table.sizes) == {"lead_time": 3, "region": 2} and table["significant"].dtype == bool
    assert table.attrs["confidence"] == 0.95
    for i in range(3):
        for j in range(2):
            r = paired.ratio_interval(a[i, j], base[i, j])
            got = table.isel(lead_time=i, region=j)
            assert (float(got["ratio"]), float(got["low"]), float(got["high"])) == pytest.approx(
                (r.ratio, r.low, r.high), rel=1e-12)
            assert bool(got["significant"]) == r.significant
            assert (float(got["rho"]), int(got["n"])) == (pytest.approx(r.difference.rho), r.difference.n)
    assert table["n"].values.tolist() == [[40, 40], [40, 40], [36, 36]]
    assert table["significant"].sel(lead_time=leads[0]).all()  # 5 % better with 0.05 noise
    with pytest.raises(ValueError, match="init_time"):
        paired.compare(fa.isel(init_time=0), fb)


def test_paired_scorecard_draws_significance(tmp_path):
    from weatherens.verify import plots

    leads = np.array([24, 48, 72, 120], "timedelta64[h]").astype("timedelta64[ns]")
    ratio = np.array([[[0.90, 0.98, 1.01, 1.10], [0.95, 1.00, np.nan, 1.02]],
                      [[0.80, 0.85, 0.99, 1.20], [1.05, 0.97, 0.96, 0.94]]])  # (baseline, channel, lead)
    significant = np.array([[[1, 0, 0, 1], [1, 0, 0, 0]], [[1, 1, 0, 1], [0, 0, 0, 1]]], bool)
    dims = ("baseline", "channel", "lead_time")
    table = xr.Dataset({"ratio": (dims, ratio), "significant": (dims, significant)},
                       coords={"baseline": ["climatology", "ifs"], "channel": ["z@500", "t2m"], "lead_time": leads})
    fig = plots.paired_scorecard_figure(table, "test")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2
    for ax, sig, rel in zip(panels, significant, ratio):
        cells = {c.get_label(): c for c in ax.collections}
        assert len(cells["significant"].get_paths()) == (sig & np.isfinite(rel)).sum()
        assert len(cells["not significant"].get_paths()) == (~sig & np.isfinite(rel)).sum()
        assert np.all(cells["significant"].get_facecolor()[:, 3] == 1.0)
        assert np.all(cells["not significant"].get_facecolor()[:, 3] < 0.5)
        assert cells["not significant"].get_hatch() and not cells["significant"].get_hatch()
    # the significant 10 % improvement (first cell) is blue, the significant 10 % degradation red
    first = panels[0].collections[0].get_facecolor()  # significant cells in row-major order: (0,0), (0,3), (1,0)
    assert first[0, 2] > first[0, 0] and first[1, 0] > first[1, 2]
    assert "missing" in {c.get_label() for c in panels[0].collections}
    bold = [t for t in panels[1].texts if t.get_fontweight() == "bold"]
    assert len(bold) == significant[1].sum()
    assert [t.get_text() for t in panels[0].texts[:3]] == ["-10", "-2.0", "+1.0"]  # 100 (0.9 - 1) is -9.99..
    assert [t.get_text() for t in panels[-1].get_xticklabels()] == ["1", "2", "3", "5"]
    paths = plots.paired_scorecard(table, tmp_path, "weatherens vs baselines")
    assert [p.name for p in paths] == ["paired_scorecard_weatherens_vs_baselines.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 10_000
