"""Verification plots from fake scores datasets in the format `weatherens verify` writes.

Set WEATHERENS_PLOTS_PREVIEW=1 to also keep the PNGs in /tmp/plots_preview/ for a look.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread

from weatherens.verify import plots

LEADS_H = np.arange(6, 241, 6)
REGIONS = ["global", "tropics", "extratropics_nh", "extratropics_sh"]
METRICS = ["crps", "crps_fair", "rmse", "spread", "ssr", "ssr_debiased", "acc",
           "brier>273.15", "brier_debiased>q0.9"]
MEMBERS = 8
Z_UNITS, T_UNITS = "m**2 s**-2", "K"


def fake_scores(name: str, factor: float = 1.0, spectra: bool = True, ranks: bool = True,
                nan_lead: int | None = None) -> xr.Dataset:
    """Scores growing with lead time: geopotential at 500 and 850 hPa, 2m_temperature at the surface.

    Every CRPS, RMSE and spread is `factor` times the same curve, so a forecast with factor 1 against
    a baseline with factor 2 scores (1 - 2) / 2 = -50 % everywhere.
    """
    rng = np.random.default_rng(0)
    lead = LEADS_H * np.timedelta64(1, "h")
    days = LEADS_H / 24
    per_metric = {"crps": 1.1, "crps_fair": 1.0, "rmse": 1.6, "spread": 1.3, "ssr": 0.8, "ssr_debiased": 0.85,
                  "acc": 0.9, "brier>273.15": 0.1, "brier_debiased>q0.9": 0.05}
    coords = dict(metric=METRICS, lead_time=lead, region=REGIONS)
    data_vars = {}
    for var, levels, scale, units in (("geopotential", [500, 850], 300.0, Z_UNITS),
                                      ("2m_temperature", None, 1.5, T_UNITS)):
        curve = np.array([per_metric[m] for m in METRICS])[:, None, None] * (1 + days)[None, :, None] * np.ones(4)
        dimensionless = np.isin(METRICS, ["ssr", "ssr_debiased", "acc"]) | np.char.startswith(METRICS, "brier")
        values = np.where(dimensionless[:, None, None], curve / (1 + days)[None, :, None], factor * scale * curve)
        dims = ("metric", "lead_time", "region")
        if levels:
            values = np.stack([values, 1.5 * values], axis=-1)
            dims += ("level",)
        if nan_lead is not None:
            values[:, nan_lead] = np.nan
        data_vars[var] = xr.Variable(dims, values, {"units": units})
        lev = {"level": levels} if levels else {}
        rank_shape = (len(LEADS_H), len(REGIONS)) + ((len(levels),) if levels else ()) + (MEMBERS + 1,)
        hist = rng.uniform(0.5, 1.5, rank_shape)
        if ranks:
            rank_dims = ("lead_time", "region") + (("level",) if levels else ()) + ("rank",)
            data_vars[f"{var}_rank_histogram"] = xr.Variable(rank_dims, hist / hist.sum(-1, keepdims=True))
        if spectra:
            ell, m = np.arange(22), np.arange(33)
            sh = scale**2 * np.maximum(ell, 1.0) ** -3.0
            zonal = scale**2 * np.maximum(m, 1.0) ** -3.0
            damp = np.exp(-np.outer(days, ell) / 50)  # the ensemble mean loses small scales with lead
            sh = np.stack([np.broadcast_to(sh, damp.shape), 0.9 * sh * np.ones_like(damp), sh * damp])
            zonal = np.stack([np.broadcast_to(zonal, (len(lead), 33))] * 3) * np.array([1, 0.9, 0.5])[:, None, None]
            if levels:
                sh, zonal = np.stack([sh, sh], axis=2), np.stack([zonal, zonal], axis=2)
            zonal = np.stack([zonal, zonal], axis=2)  # two bands
            data_vars[f"{var}_sh_spectrum"] = xr.Variable(
                ("source", "lead_time") + (("level",) if levels else ()) + ("total_wavenumber",), sh)
            data_vars[f"{var}_zonal_spectrum"] = xr.Variable(
                ("source", "lead_time", "band") + (("level",) if levels else ()) + ("zonal_wavenumber",), zonal)
            coords.update(source=["truth", "members", "ensemble_mean"], band=["extratropics_nh", "tropics"],
                          total_wavenumber=ell, zonal_wavenumber=m)
        coords.update(lev)
    data_vars["n_init"] = xr.Variable(("lead_time",), np.full(len(lead), 20))
    attrs = {"forecast": f"/data/{name}.zarr", "truth": "/data/era5.zarr", "members": MEMBERS, "name": name}
    return xr.Dataset(data_vars, coords, attrs)


def assert_png(path: Path) -> None:
    assert path.is_file() and path.suffix == ".png", path
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300, (path, image.shape)
    assert image[..., :3].std() > 0.01, f"{path} looks blank"


def test_all_plots_writes_the_expected_valid_pngs(tmp_path):
    ours, persistence = fake_scores("weatherens"), fake_scores("persistence", factor=2.0, spectra=False)
    paths = plots.all_plots([ours], tmp_path, baseline=persistence)
    names = sorted(p.name for p in paths)
    expected = sorted(
        ["skill_geopotential_500.png", "skill_geopotential_850.png", "skill_2m_temperature.png",
         "scorecard_crps_fair_weatherens_vs_persistence.png"]
        + ["spectrum_weatherens_geopotential_500.png", "spectrum_weatherens_2m_temperature.png"]
        + [f"rank_{n}_{v}.png" for n in ("weatherens", "persistence")
           for v in ("geopotential_500", "geopotential_850", "2m_temperature")])
    assert names == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == expected  # no temporary files left
    for path in paths:
        assert_png(path)
    if os.environ.get("WEATHERENS_PLOTS_PREVIEW"):
        preview = Path("/tmp/plots_preview")
        preview.mkdir(exist_ok=True)
        for path in paths:
            shutil.copy(path, preview / path.name)


def test_skill_axis_labels_carry_units_and_lines_skip_nan_leads():
    ours, persistence = fake_scores("weatherens", nan_lead=3), fake_scores("persistence", factor=2.0)
    figures = plots.skill_figures([ours, persistence])
    assert set(figures) == {"skill_geopotential_500", "skill_geopotential_850", "skill_2m_temperature"}
    crps, rmse, ssr = figures["skill_geopotential_500"].axes
    assert crps.get_ylabel() == "fair CRPS [m$^{2}$ s$^{-2}$]" == f"fair CRPS [{plots.pretty_units(Z_UNITS)}]"
    assert rmse.get_ylabel().endswith("[m$^{2}$ s$^{-2}$]")
    assert "[" not in ssr.get_ylabel()  # dimensionless
    assert figures["skill_2m_temperature"].axes[0].get_ylabel() == "fair CRPS [K]"
    assert all(ax.get_xlabel() == "lead time [days]" for ax in (crps, rmse, ssr))
    assert [t.get_text() for t in crps.get_legend().get_texts()] == ["weatherens", "persistence"]
    ours_line, base_line = crps.get_lines()
    assert len(ours_line.get_xdata()) == len(LEADS_H) - 1 and np.isfinite(ours_line.get_ydata()).all()
    np.testing.assert_allclose(base_line.get_xdata(), LEADS_H / 24)
    # CRPS at 500 hPa: factor * 300 (geopotential scale) * 1.0 (crps_fair) * (1 + days)
    np.testing.assert_allclose(base_line.get_ydata(), 2.0 * 300.0 * 1.0 * (1 + LEADS_H / 24))
    assert len(rmse.get_lines()) == 4 and [ln.get_linestyle() for ln in rmse.get_lines()] == ["-", "--"] * 2
    assert any(ln.get_ydata()[0] == 1 for ln in ssr.get_lines())  # the reliable line SSR = 1


def test_scorecard_is_the_relative_difference_in_percent():
    ours, persistence = fake_scores("weatherens"), fake_scores("persistence", factor=2.0)
    (stem, fig), = plots.scorecard_figures([ours, persistence], persistence).items()
    assert stem == "scorecard_crps_fair_weatherens_vs_persistence"
    ax = fig.axes[0]
    assert ax.get_title().startswith("weatherens vs persistence")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["geopotential@500", "geopotential@850", "2m_temperature"]
    cells = ax.images[0].get_array()
    assert cells.shape == (3, len(LEADS_H))
    np.testing.assert_allclose(cells, 100 * (1.0 - 2.0) / 2.0)  # -50 %: blue, better than the baseline
    lo, hi = ax.images[0].get_clim()
    assert lo == -hi


def test_spectra_are_log_log_with_power_units():
    figures = plots.spectra_figures(fake_scores("weatherens"), leads=[24, np.timedelta64(240, "h")])
    fig = figures["spectrum_weatherens_geopotential_500"]
    axes = np.array(fig.axes[:4])  # 2 rows x 2 leads; secondary wavelength axes come after
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in axes)
    assert [ax.get_title() for ax in axes] == ["+1 d", "+10 d"] * 2
    assert axes[0].get_ylabel() == "SH power [(m$^{2}$ s$^{-2}$)$^{2}$]"
    assert figures["spectrum_weatherens_2m_temperature"].axes[0].get_ylabel() == "SH power [K$^{2}$]"
    assert plots.pretty_units("(K)**2") == "K$^{2}$" and plots.pretty_units("(m s**-1)**2") == "(m s$^{-1}$)$^{2}$"
    assert [ln.get_label() for ln in axes[0].get_lines()] == ["truth", "members", "ensemble_mean"]
    assert len(axes[0].get_lines()[0].get_xdata()) == 21  # wavenumber 0 cannot be drawn on a log axis
    assert "band extratropics_nh" in axes[2].get_xlabel()


def test_rank_histograms_have_the_flat_line():
    fig = plots.rank_histogram_figures(fake_scores("weatherens"))["rank_weatherens_2m_temperature"]
    assert len(fig.axes) == 3  # first, middle, last lead
    ax = fig.axes[0]
    assert len(ax.patches) == MEMBERS + 1
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(1 / (MEMBERS + 1))


def test_missing_pieces_are_skipped(tmp_path):
    bare = fake_scores("persistence", spectra=False, ranks=False).drop_sel(metric=["crps_fair", "ssr_debiased"])
    paths = plots.all_plots(bare, tmp_path)
    assert sorted(p.name for p in paths) == [
        "skill_2m_temperature.png", "skill_geopotential_500.png", "skill_geopotential_850.png"]
    assert plots.skill_figures(bare)["skill_2m_temperature"].axes[0].get_ylabel() == "CRPS [K]"  # fallback
    assert plots.skill_figures(bare, region="arctic") == {}
    assert plots.rank_histogram_figures(fake_scores("x"), leads=[999]) == {}
    ours, base = (fake_scores(n, spectra=False, ranks=False) for n in ("weatherens", "persistence"))
    named = plots.all_plots([ours, base], tmp_path / "named", baseline="persistence")  # baseline by name
    assert [p.name for p in named if p.name.startswith("scorecard")] == [
        "scorecard_crps_fair_weatherens_vs_persistence.png"]
    # a one-member baseline has no fair CRPS: its CRPS (absolute error) stands in
    assert [p.name for p in plots.scorecard(ours, bare, tmp_path)] == ["scorecard_crps_fair_weatherens_vs_persistence.png"]
    assert plots.scorecard(ours, bare.drop_sel(metric=["crps"]), tmp_path / "none") == []


def test_reads_scores_back_from_netcdf(tmp_path):
    path = tmp_path / "scores.nc"
    fake_scores("weatherens").to_netcdf(path)
    baseline = fake_scores("persistence", factor=2.0)
    paths = plots.scorecard([path], baseline, tmp_path / "png") + plots.rank_histograms(path, tmp_path / "png")
    assert [p.name for p in paths] == ["scorecard_crps_fair_weatherens_vs_persistence.png",
                                       "rank_weatherens_geopotential_500.png", "rank_weatherens_geopotential_850.png",
                                       "rank_weatherens_2m_temperature.png"]
    for p in paths:
        assert_png(p)
