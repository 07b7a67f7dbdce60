"""verify end to end: alignment by valid time, layouts, missing truth, hand-checked values, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from helpers import canonical_dataset, serve_directory, write_zarr
from weatherens import cli, grid
from weatherens.verify import blocks, evaluation
from weatherens.verify import io as verify_io

LEADS_H = (6, 12, 18)


def make_forecast(truth: xr.Dataset, inits: slice, members: int, noise: float, seed: int = 0, leads=LEADS_H):
    """Members = truth at valid time + independent N(0, noise^2) (an exchangeable ensemble when the
    truth is also perturbed the same way); WB2 layout: time, prediction_timedelta, number, ..."""
    rng = np.random.default_rng(seed)
    init_times = truth["time"].values[inits]
    out = {}
    for v in truth.data_vars:
        per_lead = []
        for h in leads:
            valid = init_times + np.timedelta64(h, "h")
            x = truth[v].sel(time=valid).values.astype(np.float64)
            per_lead.append(x[:, None] + noise * rng.standard_normal((x.shape[0], members) + x.shape[1:]))
        data = np.stack(per_lead, axis=1).astype(np.float32)  # (time, lead, number, ...)
        dims = ("time", "prediction_timedelta", "number") + truth[v].dims[1:]
        out[v] = (dims, data, dict(truth[v].attrs))
    coords = {
        "time": init_times,
        "prediction_timedelta": np.array(leads, "timedelta64[h]").astype("timedelta64[ns]"),
        "number": np.arange(members),
        "level": truth["level"].values, "latitude": truth["latitude"].values, "longitude": truth["longitude"].values,
    }
    return xr.Dataset(out, coords=coords)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    truth = canonical_dataset(ntime=24, nlat=16, nlon=32)
    fcst = make_forecast(truth, slice(0, 8), members=5, noise=1.0)
    return truth, fcst, write_zarr(truth, root / "truth.zarr"), write_zarr(fcst, root / "fc.zarr"), root


def score(path, truth_path, **kw):
    return evaluation.evaluate(verify_io.open_forecast(path), verify_io.open_truth(truth_path), progress=False, **kw)


def test_scores_dataset_has_the_documented_form(stores):
    truth, fcst, tpath, fpath, _ = stores
    s = score(fpath, tpath)
    assert s["temperature"].dims == ("metric", "lead_time", "region", "level")
    assert s["2m_temperature"].dims == ("metric", "lead_time", "region")
    assert set(evaluation.BASE_METRICS) <= set(s["metric"].values.tolist())
    assert list(s["region"].values) == list(evaluation.REGIONS)
    np.testing.assert_array_equal(s["lead_time"].values, fcst["prediction_timedelta"].values)
    assert s["temperature"].attrs["units"] == "K"
    assert s["temperature_rank_histogram"].sizes["rank"] == 6
    assert set(s["temperature_sh_spectrum"]["source"].values) == {"truth", "members", "ensemble_mean"}
    assert json.loads(s.attrs["missing"]) == {}


def test_rmse_and_crps_match_a_hand_computation(stores):
    """Recompute one lead's global scores with plain numpy: the WB2 order of reductions."""
    truth, fcst, tpath, fpath, _ = stores
    s = score(fpath, tpath)
    w = grid.latitude_weights(truth["latitude"].values)[:, None]
    lead = np.timedelta64(12, "h")
    f = fcst["2m_temperature"].sel(prediction_timedelta=lead).values.astype(np.float64)  # (init, M, lat, lon)
    y = truth["2m_temperature"].sel(time=fcst["time"].values + lead).values.astype(np.float64)
    wmean = lambda a: (a * w).mean(axis=(-2, -1)) / w.mean()  # noqa: E731
    rmse = np.sqrt(wmean((f.mean(1) - y) ** 2).mean())
    m = f.shape[1]
    pair = np.abs(f[:, :, None] - f[:, None, :]).sum(axis=(1, 2))
    crps_fair = wmean(np.abs(f - y[:, None]).mean(1) - pair / (2 * m * (m - 1))).mean()
    spread = np.sqrt(wmean(f.var(axis=1, ddof=1)).mean())
    got = s["2m_temperature"].sel(lead_time=lead, region="global")
    np.testing.assert_allclose(got.sel(metric="rmse"), rmse, rtol=1e-6)
    np.testing.assert_allclose(got.sel(metric="crps_fair"), crps_fair, rtol=1e-6)
    np.testing.assert_allclose(got.sel(metric="spread"), spread, rtol=1e-6)
    np.testing.assert_allclose(got.sel(metric="ssr"), spread / rmse, rtol=1e-6)


def test_a_perfect_forecast_scores_zero(tmp_path):
    truth = canonical_dataset(ntime=16, nlat=16, nlon=32)
    fcst = make_forecast(truth, slice(0, 6), members=3, noise=0.0)
    s = score(write_zarr(fcst, tmp_path / "f.zarr"), write_zarr(truth, tmp_path / "t.zarr"))
    for m in ("crps", "crps_fair", "rmse", "spread"):
        np.testing.assert_allclose(s["geopotential"].sel(metric=m), 0.0, atol=1e-6)


@pytest.mark.parametrize("layout", ["realization_lead_time", "latitude_descending", "lon_lat_order"])
def test_forecast_layouts_give_the_same_scores(stores, tmp_path, layout):
    truth, fcst, tpath, fpath, _ = stores
    if layout == "realization_lead_time":
        other = fcst.rename({"number": "realization", "prediction_timedelta": "lead_time"})
    elif layout == "latitude_descending":
        other = fcst.isel(latitude=slice(None, None, -1))
    else:
        other = fcst.transpose(..., "longitude", "latitude")
    a = score(fpath, tpath)
    b = score(write_zarr(other, tmp_path / "other.zarr"), tpath)
    for v in ("temperature", "2m_temperature", "temperature_rank_histogram"):
        np.testing.assert_allclose(a[v].values, b[v].values, rtol=1e-12, err_msg=v)


def test_one_member_crps_is_the_mean_absolute_error(tmp_path):
    truth = canonical_dataset(ntime=16, nlat=16, nlon=32)
    fcst = make_forecast(truth, slice(0, 6), members=1, noise=2.0)
    s = score(write_zarr(fcst, tmp_path / "f.zarr"), write_zarr(truth, tmp_path / "t.zarr"))
    w = grid.latitude_weights(truth["latitude"].values)[:, None]
    lead = np.timedelta64(6, "h")
    f = fcst["2m_temperature"].sel(prediction_timedelta=lead).values[:, 0].astype(np.float64)
    y = truth["2m_temperature"].sel(time=fcst["time"].values + lead).values
    mae = ((np.abs(f - y) * w).mean(axis=(-2, -1)) / w.mean()).mean()
    np.testing.assert_allclose(s["2m_temperature"].sel(metric="crps", lead_time=lead, region="global"), mae, rtol=1e-6)
    assert "crps_fair" not in s["metric"].values


def test_leads_and_variables_without_truth_are_reported_not_dropped(tmp_path):
    truth = canonical_dataset(ntime=12, nlat=16, nlon=32)
    fcst = make_forecast(canonical_dataset(ntime=40, nlat=16, nlon=32), slice(6, 9), members=3, noise=1.0,
                         leads=(6, 24, 48))
    fcst["specific_humidity"] = fcst["2m_temperature"] * 0
    s = score(write_zarr(fcst, tmp_path / "f.zarr"), write_zarr(truth, tmp_path / "t.zarr"))
    missing = json.loads(s.attrs["missing"])
    assert missing["specific_humidity"] == ["all leads: variable not in truth"]
    assert missing["temperature"] == ["48 h"]
    assert np.isnan(s["temperature"].sel(lead_time=np.timedelta64(48, "h"))).all()
    assert s["temperature_n_init"].values.tolist() == [3, 2, 0]  # 24 h: only inits whose valid time exists


def test_lead_groups_share_init_masks_and_keep_lead_order():
    a, b = np.array([True, True]), np.array([True, False])
    scored = [(0, a), (1, a), (2, b), (3, a), (4, a), (5, b)]
    groups = blocks.lead_groups(scored, 3, np.arange(6))  # one stored chunk per lead
    assert [[i for i, _ in g] for g in groups] == [[0, 1, 3], [4], [2, 5]]
    # leads stored two per chunk: a group of at most 3 takes whole chunks, cutting a chunk only when larger
    same = [(i, a) for i in range(6)]
    groups = blocks.lead_groups(same, 3, np.array([0, 0, 1, 1, 2, 2]))
    assert [[i for i, _ in g] for g in groups] == [[0, 1], [2, 3], [4, 5]]
    groups = blocks.lead_groups(same, 1, np.array([0, 0, 1, 1, 2, 2]))
    assert [[i for i, _ in g] for g in groups] == [[0], [1], [2], [3], [4], [5]]


def test_grouped_leads_score_as_one_lead_at_a_time(tmp_path, monkeypatch):
    """A truth that ends inside the forecast (inits lose leads one by one) and a WB2 dayofyear x hour
    climatology: scoring several leads per task gives the scores of one lead per task."""
    truth = canonical_dataset(ntime=11, nlat=16, nlon=32)
    fcst = make_forecast(canonical_dataset(ntime=40, nlat=16, nlon=32), slice(4, 9), members=4, noise=1.0,
                         leads=(6, 12, 18, 24, 30))
    mean = truth.mean("time")
    clim = xr.Dataset({v: mean[v].expand_dims(dayofyear=np.arange(1, 367), hour=[0, 6, 12, 18]).copy()
                       + xr.DataArray(np.arange(4.0), dims="hour", coords={"hour": [0, 6, 12, 18]})
                       for v in truth.data_vars})
    f, t = write_zarr(fcst, tmp_path / "f.zarr"), write_zarr(truth, tmp_path / "t.zarr")
    grouped = score(f, t, climatology=clim)
    assert grouped["temperature_n_init"].values.tolist() == [5, 5, 4, 3, 2]
    monkeypatch.setattr(blocks, "MAX_LEADS_PER_BLOCK", 1)
    one_by_one = score(f, t, climatology=clim)
    for v in grouped.data_vars:
        np.testing.assert_allclose(grouped[v].values, one_by_one[v].values, rtol=1e-12, atol=1e-14, err_msg=v)
    assert np.isfinite(grouped["temperature"].sel(metric="acc")).all()


def test_exchangeable_ensemble_has_debiased_ssr_near_one(tmp_path):
    base = canonical_dataset(ntime=30, nlat=32, nlon=64)
    rng = np.random.default_rng(7)
    truth = base.copy(deep=True)
    truth["2m_temperature"] = truth["2m_temperature"] + rng.standard_normal(truth["2m_temperature"].shape).astype(np.float32)
    fcst = make_forecast(base, slice(0, 20), members=4, noise=1.0, seed=3)
    s = score(write_zarr(fcst, tmp_path / "f.zarr"), write_zarr(truth, tmp_path / "t.zarr"), variables=["2m_temperature"])
    ssr = s["2m_temperature"].sel(metric="ssr_debiased", region="global")
    np.testing.assert_allclose(ssr, 1.0, atol=0.03)
    raw = s["2m_temperature"].sel(metric="ssr", region="global")
    np.testing.assert_allclose(raw, np.sqrt(4 / 5), atol=0.03)
    hist = s["2m_temperature_rank_histogram"].sel(region="global")
    np.testing.assert_allclose(hist, 1 / 5, atol=0.02)


@pytest.mark.slow
def test_cli_verify_writes_scores_and_plots(stores, capsys):
    truth, fcst, tpath, fpath, root = stores
    worse = make_forecast(truth, slice(0, 8), members=5, noise=3.0, seed=1)
    wpath = write_zarr(worse, root / "worse.zarr")
    out, plots = root / "scores.nc", root / "plots"
    code = cli.main(["verify", "--forecast", str(fpath), "--forecast", str(wpath), "--name", "good", "--name", "bad",
                     "--truth", str(tpath), "--out", str(out), "--plots", str(plots), "--thresholds", "q0.9", "--quiet"])
    assert code == 0
    good, bad = xr.open_dataset(root / "scores.good.nc"), xr.open_dataset(root / "scores.bad.nc")
    assert (good["temperature"].sel(metric="crps_fair") < bad["temperature"].sel(metric="crps_fair")).all()
    assert "brier>q0.9" in good["metric"].values
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert any(p.startswith("skill_") for p in pngs) and any(p.startswith("scorecard_") for p in pngs)


@pytest.mark.slow
def test_scores_do_not_depend_on_the_block_size(stores, monkeypatch):
    """Small blocks (one init x half the rows; two members per spectrum task) give the same scores,
    rank histograms included (geopotential has ties in float32)."""
    truth, fcst, tpath, fpath, _ = stores
    kw = dict(thresholds=["q0.8", "280"], variables=["geopotential", "2m_temperature"])
    whole = score(fpath, tpath, **kw)
    f = verify_io.open_forecast(fpath)["temperature"].isel(prediction_timedelta=0)
    row = f.sizes["longitude"] * f.sizes["level"] * (f.sizes["number"] * 4 + 20 * 8)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 8 * row)
    assert blocks.pointwise_block_shape(f) == (1, 8)
    assert blocks.spectrum_block_shape(f) == (1, 2)
    tiny = score(fpath, tpath, **kw)
    for v in whole.data_vars:
        np.testing.assert_allclose(tiny[v].values, whole[v].values, rtol=1e-10, atol=1e-12, err_msg=v)


@pytest.mark.slow
def test_runs_on_a_dask_distributed_cluster(stores):
    distributed = pytest.importorskip("distributed")
    truth, fcst, tpath, fpath, _ = stores
    local = score(fpath, tpath, variables=["2m_temperature"])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        remote = score(fpath, tpath, variables=["2m_temperature"])
    for v in local.data_vars:
        np.testing.assert_allclose(remote[v].values, local[v].values, rtol=1e-12, err_msg=v)


def test_per_init_scores_average_to_the_scores_and_match_the_paired_module(tmp_path):
    """v_per_init holds each init's regional means: their mean over inits is the score, the fair CRPS
    per init is `paired.per_init_crps_fair`'s (tested against a brute-force loop), and an init
    without truth at a lead is NaN there, not dropped."""
    from weatherens.verify import paired

    truth = canonical_dataset(ntime=11, nlat=16, nlon=32)
    fcst = make_forecast(canonical_dataset(ntime=40, nlat=16, nlon=32), slice(4, 9), members=4, noise=1.0,
                         leads=(6, 12, 18))
    s = score(write_zarr(fcst, tmp_path / "f.zarr"), write_zarr(truth, tmp_path / "t.zarr"))
    per_init = s["temperature_per_init"]
    assert per_init.dims == ("score", "init_time", "lead_time", "region", "level")
    np.testing.assert_array_equal(per_init["init_time"].values, fcst["time"].values)
    assert per_init.sel(lead_time=np.timedelta64(18, "h")).isnull().sum("init_time").sel(
        score="crps_fair", region="global").values.tolist() == [1, 1]  # the last init's valid time has no truth
    for name in ("crps", "crps_fair"):
        np.testing.assert_allclose(per_init.sel(score=name).mean("init_time", skipna=True),
                                   s["temperature"].sel(metric=name), rtol=1e-12)
    np.testing.assert_allclose(np.sqrt(per_init.sel(score="mse").mean("init_time", skipna=True)),
                               s["temperature"].sel(metric="rmse"), rtol=1e-12)
    lead = np.timedelta64(12, "h")
    expected = paired.per_init_crps_fair(fcst, truth, "temperature", 850, lead)
    np.testing.assert_allclose(per_init.sel(score="crps_fair", lead_time=lead, region="global", level=850),
                               expected, rtol=1e-6)


@pytest.mark.parametrize("chunks", [
    {"time": 3, "prediction_timedelta": 2, "number": 3, "level": 1, "latitude": 8, "longitude": 32},  # cut everywhere
    None,  # as xarray writes by default (zarr's own chunk guess)
])
def test_each_stored_chunk_of_the_forecast_is_read_once(tmp_path, chunks):
    """Scoring a forecast over HTTP: every chunk of its variables is fetched once, however the store
    is chunked (dask chunks of one init and one lead fetched a chunk of 3 inits x 2 leads 6 times)."""
    truth = canonical_dataset(ntime=24, nlat=16, nlon=32)
    fcst = make_forecast(truth, slice(0, 8), members=5, noise=1.0)
    encoding = None if chunks is None else {v: {"chunks": tuple(chunks[d] for d in fcst[v].dims)}
                                            for v in fcst.data_vars}
    fcst.to_zarr(tmp_path / "fc.zarr", mode="w", consolidated=False, zarr_format=3, encoding=encoding)
    write_zarr(truth, tmp_path / "truth.zarr")
    requests: list[str] = []
    with serve_directory(tmp_path, requests) as url:
        s = score(f"{url}/fc.zarr", f"{url}/truth.zarr")
    data_chunks = sorted(f"/{p.relative_to(tmp_path)}" for v in fcst.data_vars
                         for p in (tmp_path / "fc.zarr" / v / "c").rglob("*") if p.is_file())
    fetched = sorted(r for r in requests if any(r.startswith(f"/fc.zarr/{v}/c/") for v in fcst.data_vars))
    assert chunks is None or len(data_chunks) == 24 + 48 + 48  # 3 x 2 x 2 x 2 chunks of 2m_temperature, x 2 levels
    assert fetched == data_chunks
    assert np.isfinite(s["temperature"].sel(metric="crps_fair")).all()


def test_metrics_subset_scores_the_same_and_skips_the_rest(stores):
    truth, fcst, tpath, fpath, _ = stores
    full = score(fpath, tpath)
    some = score(fpath, tpath, metrics=["crps_fair", "rmse", "spread"])
    assert some["temperature"]["metric"].values.tolist() == ["crps_fair", "rmse", "spread"]
    xr.testing.assert_allclose(some["temperature"], full["temperature"].sel(metric=["crps_fair", "rmse", "spread"]),
                               rtol=1e-12)
    assert some["temperature_per_init"]["score"].values.tolist() == ["crps_fair", "mse", "var"]
    assert not {k for k in some.data_vars if k.endswith(("rank_histogram", "sh_spectrum", "zonal_spectrum"))}
    assert {"temperature_rank_histogram", "temperature_sh_spectrum"} <= set(full.data_vars)
    with pytest.raises(cli.WeatherensError, match=r"--metrics: unknown metric\(s\) \['crsp'\]"):
        score(fpath, tpath, metrics=["crsp"])
