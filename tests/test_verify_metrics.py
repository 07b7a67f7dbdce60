"""Pointwise ensemble metrics: hand values written as their arithmetic, brute force, limits, references."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scores.probability import crps_for_ensemble

from weatherens import grid
from weatherens.verify import metrics

M3 = xr.DataArray([1.0, 2.0, 4.0], dims="number")  # the running example: members 1, 2, 4


def ensemble(shape=(3, 4, 5), members=6, seed=0, dims=("time", "latitude", "longitude"), integer=False):
    """(forecast with the member dim second, as WB2 stores it; truth) of random numbers."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((shape[0], members) + shape[1:])
    y = rng.standard_normal(shape)
    if integer:  # many ties
        f, y = np.round(2 * f), np.round(2 * y)
    return xr.DataArray(f, dims=(dims[0], "number") + dims[1:]), xr.DataArray(y, dims=dims)


def brute_crps(f, y, fair):
    """O(M^2) loops over one point's members."""
    m = len(f)
    skill = sum(abs(x - y) for x in f) / m
    spread = sum(abs(a - b) for a, b in itertools.product(f, f))
    return skill - spread / (2 * m * (m - 1) if fair else 2 * m * m)


# ----------------------------------------------------------------------------- CRPS


def test_crps_hand_values():
    # |1-3| + |2-3| + |4-3| = 2 + 1 + 1; pairs |1-2| + |1-4| + |2-4| = 1 + 3 + 2, counted twice
    assert float(metrics.crps_fair(M3, 3.0)) == pytest.approx((2 + 1 + 1) / 3 - 2 * (1 + 3 + 2) / (2 * 3 * 2))
    assert float(metrics.crps_ecdf(M3, 3.0)) == pytest.approx((2 + 1 + 1) / 3 - 2 * (1 + 3 + 2) / (2 * 3 * 3))
    # truth below every member: |1-0| + |2-0| + |4-0|
    assert float(metrics.crps_fair(M3, 0.0)) == pytest.approx((1 + 2 + 4) / 3 - 2 * (1 + 3 + 2) / (2 * 3 * 2))
    # two members 0 and 2, truth 1: fair = (1 + 1)/2 - 2 * 2 / (2 * 2 * 1) = 0, the perfect score for a fair estimate
    assert float(metrics.crps_fair(xr.DataArray([0.0, 2.0], dims="number"), 1.0)) == pytest.approx(0.0)


@pytest.mark.parametrize("members", [2, 3, 7, 20])
@pytest.mark.parametrize("integer", [False, True])
def test_crps_matches_brute_force(members, integer):
    f, y = ensemble(shape=(2, 3, 4), members=members, integer=integer, seed=members)
    for fair, fn in ((True, metrics.crps_fair), (False, metrics.crps_ecdf)):
        got = fn(f, y)
        assert got.dims == y.dims and got.dtype == np.float64
        want = np.vectorize(lambda *idx: brute_crps(f.values[idx[0], :, idx[1], idx[2]], y.values[idx], fair))(
            *np.indices(y.shape)
        )
        np.testing.assert_allclose(got.values, want, rtol=1e-12, atol=1e-12)


def test_one_member_ecdf_is_absolute_error_and_fair_is_undefined():
    f, y = ensemble(members=1)
    np.testing.assert_allclose(metrics.crps_ecdf(f, y).values, np.abs(f.isel(number=0) - y).values, rtol=1e-14)
    with pytest.raises(ValueError, match="undefined for one member"):
        metrics.crps_fair(f, y)
    with pytest.raises(ValueError, match="no member dim 'realization'"):
        metrics.crps_fair(f, y, member_dim="realization")


@pytest.mark.parametrize("method", ["fair", "ecdf"])
def test_crps_agrees_with_scores(method):
    f, y = ensemble(shape=(4, 8, 16), members=11, seed=3)
    ours = (metrics.crps_fair if method == "fair" else metrics.crps_ecdf)(f, y)
    ref = crps_for_ensemble(f, y, "number", method=method, preserve_dims="all")
    xr.testing.assert_allclose(ours, ref.transpose(*ours.dims), rtol=1e-12)


def test_layouts_float32_and_broadcast_truth_agree():
    f, y = ensemble(shape=(3, 6, 10), members=40, seed=4)
    want = metrics.crps_fair(f, y)
    # member axis last, transposed truth, float32 members: same values (sorting float32 is exact)
    # (float32 truth too: the arithmetic must still be float64, not float32 cast afterwards)
    f32, y32 = f.transpose(..., "number").astype(np.float32), y.T.astype(np.float32)
    want32 = metrics.crps_fair(f32.astype(np.float64), y32.astype(np.float64))
    for fn in (metrics.crps_fair, metrics.crps_ecdf, metrics.ensemble_variance, metrics.ensemble_mean_squared_error):
        args = (f32,) if fn is metrics.ensemble_variance else (f32, y32)
        exact = fn(*(a.astype(np.float64) for a in args))
        xr.testing.assert_allclose(fn(*args), exact, rtol=1e-13, atol=0)
    np.testing.assert_allclose(want32.transpose(*want.dims).values, want.values, atol=1e-6)
    # a truth with a dim the forecast lacks is broadcast (one forecast, three verifying fields)
    many = xr.concat([y, y + 1, y - 1], dim="source")
    got = metrics.crps_ecdf(f, many)
    for i, shift in enumerate([0, 1, -1]):
        xr.testing.assert_allclose(got.isel(source=i, drop=True), metrics.crps_ecdf(f, y + shift))
    # strided and reversed views (non-contiguous memory) give the values of their contiguous copies
    where = {"longitude": slice(None, None, 3), "latitude": slice(None, None, -1)}
    view, y_view = f.isel(where), y.isel(where)
    copy = view.copy(data=np.ascontiguousarray(view.values))
    xr.testing.assert_allclose(metrics.crps_fair(view, y_view), metrics.crps_fair(copy, y_view), rtol=1e-13)
    assert not view.values.flags.c_contiguous


def test_nan_propagates_pointwise_only():
    f, y = ensemble(members=5)
    f[0, 2, 1, 1] = np.nan
    y[1, 0, 0] = np.nan
    for fn in (metrics.crps_fair, metrics.crps_ecdf, metrics.ensemble_mean_squared_error):
        bad = np.isnan(fn(f, y).values)
        assert bad.sum() == 2 and bad[0, 1, 1] and bad[1, 0, 0]


def test_dask_is_lazy_and_equal_to_numpy():
    f, y = ensemble(shape=(4, 8, 16), members=9, seed=5)
    fd = f.chunk(time=1, number=4, latitude=4)  # chunked along members too: rechunked to one member chunk
    yd = y.chunk(time=2)
    calls = {
        "crps_fair": lambda a, b: metrics.crps_fair(a, b),
        "crps_ecdf": lambda a, b: metrics.crps_ecdf(a, b),
        "mse": lambda a, b: metrics.ensemble_mean_squared_error(a, b),
        "var": lambda a, b: metrics.ensemble_variance(a),
        "brier": lambda a, b: metrics.brier_score(a, b, b * 0 + 0.3, debiased=True),
        "ranks": lambda a, b: metrics.ranks(a, b, seed=7),
    }
    for name, call in calls.items():
        lazy = call(fd, yd)
        assert isinstance(lazy.data, da.Array), name
        xr.testing.assert_allclose(lazy.compute(), call(f, y), rtol=1e-13)


# ----------------------------------------------------------------------------- mean, spread


def test_mean_squared_error_and_variance_hand_values():
    # mean (1 + 2 + 4)/3 = 7/3; deviations -4/3, -1/3, 5/3
    assert float(metrics.ensemble_mean_squared_error(M3, 3.0)) == pytest.approx((7 / 3 - 3) ** 2)
    assert float(metrics.ensemble_variance(M3)) == pytest.approx((16 / 9 + 1 / 9 + 25 / 9) / (3 - 1))
    f, _ = ensemble(members=8)
    np.testing.assert_allclose(metrics.ensemble_variance(f).values, f.var("number", ddof=1).values, rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2 members"):
        metrics.ensemble_variance(M3.isel(number=[0]))


def test_spread_skill_hand_values():
    s = metrics.spread_skill(4.0, 16.0, members=3)
    assert (s.spread, s.rmse, s.ssr) == (2.0, 4.0, 2.0 / 4.0)
    assert s.ssr_debiased == pytest.approx(np.sqrt((3 + 1) / 3) * 2.0 / 4.0)
    with pytest.raises(ValueError):
        metrics.spread_skill(1.0, 1.0, members=1)


def exchangeable(members, points=20_000, seed=0, spread=1.0, mean_sd=3.0):
    """Truth and members drawn from the same N(mu_p, 1) at each point (members' deviations scaled by spread)."""
    rng = np.random.default_rng(seed)
    mu = mean_sd * rng.standard_normal(points)
    y = mu + rng.standard_normal(points)
    f = mu[:, None] + spread * rng.standard_normal((points, members))
    return xr.DataArray(f, dims=("point", "number")), xr.DataArray(y, dims="point")


def test_spread_skill_of_an_exchangeable_ensemble():
    m = 10
    f, y = exchangeable(m)
    s = metrics.spread_skill(metrics.ensemble_variance(f).mean(), metrics.ensemble_mean_squared_error(f, y).mean(), m)
    assert float(s.ssr_debiased) == pytest.approx(1.0, abs=0.03)
    assert float(s.ssr) == pytest.approx(np.sqrt(m / (m + 1)), abs=0.03)


# ----------------------------------------------------------------------------- ranks


def test_rank_hand_values_and_ties():
    assert [int(metrics.ranks(M3, y)) for y in (0.0, 1.5, 3.0, 5.0)] == [0, 1, 2, 3]
    # truth 2 ties with members 2 and 2 of [1, 2, 2, 4]: one below, so rank 1, 2 or 3
    f = xr.DataArray(np.tile([1.0, 2.0, 2.0, 4.0], (3000, 1)), dims=("point", "number"))
    r = metrics.ranks(f, xr.full_like(f.isel(number=0, drop=True), 2.0), seed=1)
    assert set(np.unique(r.values)) == {1, 2, 3}
    assert np.array_equal(r, metrics.ranks(f, xr.full_like(r, 2.0, dtype=float), seed=1))  # reproducible
    assert not np.array_equal(r, metrics.ranks(f, xr.full_like(r, 2.0, dtype=float), seed=2))
    nan = metrics.ranks(M3.where(M3 != 2), 3.0)
    assert int(nan) == -1


def test_ranks_do_not_depend_on_chunking():
    f, y = ensemble(shape=(4, 8, 16), members=4, integer=True, seed=6)  # many ties
    want = metrics.ranks(f, y, seed=11)
    for chunks in ({"time": 1}, {"latitude": 3, "longitude": 5}, {"time": 3, "number": 2}):
        got = metrics.ranks(f.chunk(chunks), y.chunk({k: v for k, v in chunks.items() if k in y.dims}), seed=11)
        xr.testing.assert_equal(got.compute(), want)
    coords = dict(time=np.arange(4) * np.timedelta64(6, "h") + np.datetime64("2000-01-01", "ns"),
                  latitude=np.linspace(-80.0, 80.0, 8), longitude=np.arange(16) * 22.5)
    f, y = f.assign_coords(coords), y.assign_coords(coords)
    want = metrics.ranks(f, y, seed=11)
    part = dict(time=slice(1, 3), latitude=slice(2, 7))  # a block of the whole draws the same ties
    xr.testing.assert_equal(metrics.ranks(f.isel(part), y.isel(part), seed=11), want.isel(part))
    xr.testing.assert_equal(metrics.ranks(f.transpose("number", ...), y, seed=11).transpose(*want.dims), want)


def test_rank_histograms_flat_for_exchangeable_u_shaped_for_underdispersive():
    m = 9
    f, y = exchangeable(m, points=30_000, seed=2)
    flat = metrics.rank_histogram(metrics.ranks(f, y), m)
    assert flat.dims == ("rank",) and float(flat.sum()) == pytest.approx(1.0)
    assert float(abs(flat - 1 / (m + 1)).max()) < 0.01  # binomial sd sqrt(0.1 * 0.9 / 30000) = 0.0017
    f, y = exchangeable(m, points=30_000, seed=3, spread=0.3)
    u = metrics.rank_histogram(metrics.ranks(f, y), m).values
    assert u[0] > 2 / (m + 1) and u[-1] > 2 / (m + 1) and u[m // 2] < 0.5 / (m + 1)
    # all members equal to the truth: ties broken at random, so every rank is equally likely
    y = xr.DataArray(np.random.default_rng(4).standard_normal(50_000), dims="point")
    f = y.expand_dims(number=4).transpose("point", "number")
    tied = metrics.rank_histogram(metrics.ranks(f, y, seed=5), 4)
    assert float(abs(tied - 1 / 5).max()) < 0.01


def test_rank_histogram_weights_dims_nan_and_dask():
    f, y = ensemble(shape=(3, 8, 16), members=5, seed=8)
    f[0, 0, 0, 0] = np.nan
    r = metrics.ranks(f, y)
    assert int(r[0, 0, 0]) == -1
    w = grid.latitude_weights(np.linspace(-80, 80, 8))
    h = metrics.rank_histogram(r, 5, w, dims=["latitude", "longitude"])
    assert h.dims == ("time", "rank") and np.allclose(h.sum("rank"), 1.0)
    # by hand for one time: the weight of each rank over the weight of all valid points
    rt, ww = r.isel(time=1).values, np.broadcast_to(w[:, None], (8, 16))
    np.testing.assert_allclose(h.isel(time=1), [ww[rt == k].sum() / ww.sum() for k in range(6)], rtol=1e-12)
    lazy = metrics.rank_histogram(r.chunk(time=1), 5, w, dims=["latitude", "longitude"])
    xr.testing.assert_allclose(lazy.compute(), h)
    xr.testing.assert_allclose(metrics.rank_histogram(r.chunk(latitude=3), 5).compute(), metrics.rank_histogram(r, 5))


# ----------------------------------------------------------------------------- Brier


def test_brier_hand_values_and_threshold_field():
    # threshold 1.5: members 2 and 4 exceed it, p = 2/3; truth 3 exceeds it, o = 1
    assert float(metrics.brier_score(M3, 3.0, 1.5)) == pytest.approx((2 / 3 - 1) ** 2)
    assert float(metrics.brier_score(M3, 3.0, 1.5, debiased=True)) == pytest.approx(
        (2 / 3 - 1) ** 2 - (2 / 3) * (1 / 3) / (3 - 1)
    )
    # threshold 5: no member and not the truth, a perfect 0
    assert float(metrics.brier_score(M3, 3.0, 5.0)) == 0.0
    # a threshold per point, broadcast against the truth
    f, y = ensemble(members=7)
    thr = xr.DataArray(np.linspace(-1, 1, 5), dims="longitude")
    got = metrics.brier_score(f, y, thr)
    p = (f > thr).mean("number")
    xr.testing.assert_allclose(got, ((p - (y > thr)) ** 2).transpose(*got.dims))


def test_debiased_brier_does_not_depend_on_ensemble_size():
    # members and truth all N(0, 1): the event z > 0.5 has probability q = P(Z > 0.5) everywhere,
    # and the Brier score of that forecast distribution (M -> oo) is q (1 - q)
    q = 0.5 * (1 - 0.3829249225480262)  # 0.3829... = erf(0.5 / sqrt(2))
    f4, y4 = exchangeable(4, 40_000, seed=9, mean_sd=0.0)
    f200, y200 = exchangeable(200, 40_000, seed=10, mean_sd=0.0)
    fair4 = float(metrics.brier_score(f4, y4, 0.5, debiased=True).mean())
    fair200 = float(metrics.brier_score(f200, y200, 0.5, debiased=True).mean())
    raw4 = float(metrics.brier_score(f4, y4, 0.5).mean())
    # sd of a mean of 40,000 scores about 0.002
    assert fair4 == pytest.approx(q * (1 - q), abs=0.008)
    assert fair200 == pytest.approx(fair4, abs=0.01)
    assert raw4 == pytest.approx(q * (1 - q) * (1 + 1 / 4), abs=0.008)  # the finite-M excess E[p (1 - p)] / (M - 1)


# ----------------------------------------------------------------------------- ACC, regions


def test_anomaly_correlation_limits():
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(64)
    rng = np.random.default_rng(12)
    coords = {"time": np.arange(3), "latitude": lat, "longitude": lon}
    clim = xr.DataArray(280 + 10 * np.cos(np.deg2rad(lat))[:, None] + 0 * lon, dims=("latitude", "longitude"))
    truth = clim + xr.DataArray(rng.standard_normal((3, 32, 64)), dims=tuple(coords), coords=coords)
    w = grid.latitude_weights(lat)
    np.testing.assert_allclose(metrics.anomaly_correlation(truth, truth, clim, w), 1.0, rtol=1e-12)
    np.testing.assert_allclose(metrics.anomaly_correlation(clim - (truth - clim), truth, clim, w), -1.0, rtol=1e-12)
    other = clim + xr.DataArray(rng.standard_normal((3, 32, 64)), dims=tuple(coords), coords=coords)
    acc = metrics.anomaly_correlation(other, truth, clim, w)
    assert acc.dims == ("time",) and float(abs(acc).max()) < 0.1  # sd about 1/sqrt(2048 / 1.2) = 0.024
    # uncentred: a constant anomaly offset lowers the ACC (a centred correlation would stay 1)
    assert float(metrics.anomaly_correlation(truth + 1.0, truth, clim, w).max()) < 0.9


def test_region_masks_cover_the_globe_with_inclusive_boundaries():
    lat = np.linspace(-90, 90, 73)  # 2.5 degrees with poles: rows at exactly -20 and 20
    m = metrics.region_masks(lat)
    assert set(m) == {"global", "tropics", "extratropics_nh", "extratropics_sh"}
    assert m["global"].all()
    assert np.array_equal(m["tropics"] | m["extratropics_nh"] | m["extratropics_sh"], m["global"])
    assert np.array_equal(lat[m["tropics"]][[0, -1]], [-20.0, 20.0])
    assert lat[m["extratropics_nh"]].min() == 20.0 and lat[m["extratropics_sh"]].max() == -20.0
    # without a row on +-20 (64 x 32) the three regions partition the globe
    m = metrics.region_masks(grid.equiangular_latitudes(32))
    assert np.array_equal(m["tropics"].astype(int) + m["extratropics_nh"] + m["extratropics_sh"], np.ones(32, int))


def test_spatial_mean_weights_and_regions():
    lat, lon = grid.equiangular_latitudes(32), grid.longitudes(64)
    w = grid.latitude_weights(lat)
    masks = metrics.region_masks(lat)
    indicator = np.broadcast_to(masks["tropics"][:, None], (32, 64)).astype(float)
    tropical = xr.DataArray(indicator, dims=("latitude", "longitude"), coords={"latitude": lat, "longitude": lon})
    # the global mean of the tropics' indicator is the tropics' share of the sphere's area
    share = grid.cell_area_fractions(lat)[masks["tropics"]].sum()
    assert float(metrics.spatial_mean(tropical, w)) == pytest.approx(share)
    # a field that is NaN outside a region has a finite mean over that region
    x = (tropical * 3.0).where(tropical == 1)
    assert float(metrics.spatial_mean(x, w, masks["tropics"])) == pytest.approx(3.0)
    assert np.isnan(float(metrics.spatial_mean(x, w)))
    assert float(metrics.spatial_mean(x, w, skipna=True)) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="no grid points"):
        metrics.spatial_mean(x, w, np.zeros(32, bool))
