"""Verification figures from scores datasets (what `weatherens verify` writes), as PNG files.

Each kind of figure is built by a `*_figures` function that returns {file stem: matplotlib Figure}
(no pyplot state: `Figure` objects print through the Agg canvas, so this runs headless and leaks
nothing), and written by the function named without `_figures`, which returns the paths written:

- `skill_vs_lead`    fair CRPS, RMSE with spread, spread/skill ratio against lead time, several forecasts
- `scorecard`        relative score of forecasts against a baseline, rows variable@level x lead times
- `spectra`          spherical-harmonic and zonal power spectra of truth, members and ensemble mean
- `rank_histograms`  frequency of the truth's rank among the members, against the flat line 1/(M+1)
- `all_plots`        all of the above

Whatever a scores dataset lacks (a metric, a region, a level, spectra, rank histograms) is skipped,
and lead times whose score is NaN are not drawn. Every function takes datasets or netCDF paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

from weatherens import grid

EARTH_CIRCUMFERENCE_KM = 2 * np.pi * grid.EARTH_RADIUS_M / 1000.0
HIGHER_IS_BETTER = ("acc",)  # scorecard colours flip so that blue is always "better than the baseline"
MAX_ANNOTATED_CELLS = 300  # scorecards with more cells than this carry no numbers
LABELS: dict[str | None, str] = {"crps_fair": "fair CRPS", "crps": "CRPS", "rmse": "RMSE (spread dashed)",
                                 "ssr_debiased": "spread/skill (debiased)", "ssr": "spread/skill"}
SKILL_PANELS = ((("crps_fair", "crps"), True), (("rmse",), True), (("ssr_debiased", "ssr"), False))
SOURCE_STYLES = {"truth": dict(color="k", lw=1.8), "members": dict(color="C0", lw=1.3),
                 "ensemble_mean": dict(color="C1", lw=1.3, ls="--")}

ScoresLike = xr.Dataset | str | os.PathLike | Sequence[xr.Dataset | str | os.PathLike]


def pretty_units(units: str) -> str:
    """Units with '**' powers as mathtext superscripts: 'm**2 s**-2' -> 'm$^{2}$ s$^{-2}$', '(K)**2' -> 'K$^{2}$'."""
    units = re.sub(r"\(([^ ()]+)\)", r"\1", units or "")  # parentheses around one unit are noise
    return re.sub(r"\*\*(-?[\d.]+)", r"$^{\1}$", units)


def _label(text: str, units: str) -> str:
    return f"{text} [{pretty_units(units)}]" if units else text


def _as_list(scores: ScoresLike) -> list[xr.Dataset]:
    if isinstance(scores, (xr.Dataset, str, os.PathLike)):
        scores = [scores]
    return [s if isinstance(s, xr.Dataset) else xr.load_dataset(s) for s in scores]


def _names(scores: Sequence[xr.Dataset]) -> list[str]:
    """attrs['name'] of each dataset ('forecast<i>' without one), made unique by a suffix."""
    names: list[str] = []
    for i, ds in enumerate(scores):
        name = str(ds.attrs.get("name", f"forecast{i}"))
        names.append(name if name not in names else f"{name}_{i}")
    return names


def _union(lists: Iterable[Iterable]) -> list:
    out: list = []
    for items in lists:
        out.extend(x for x in items if x not in out)
    return out


def _variables(ds: xr.Dataset) -> list[str]:
    return [str(v) for v, da in ds.data_vars.items() if "metric" in da.dims]


def _levels(da: xr.DataArray) -> list[int | None]:
    return [int(x) for x in da["level"].values] if "level" in da.dims else [None]


def _days(lead: np.ndarray) -> np.ndarray:
    """Lead times in days (timedelta64, or numbers taken as hours)."""
    lead = np.asarray(lead)
    return lead / np.timedelta64(1, "D") if lead.dtype.kind == "m" else lead.astype(float) / 24


def _lead_label(lead) -> str:
    """'+2 d' for whole days, '+7 h' otherwise."""
    days = float(_days(lead))
    return f"+{days:g} d" if days.is_integer() else f"+{days * 24:g} h"


def _pick(da: xr.DataArray, **coords) -> xr.DataArray | None:
    """da.sel(**coords) for the coords that are dims of da (None values ignored); None if one is missing."""
    for dim, value in coords.items():
        if value is None or dim not in da.dims:
            continue
        if value not in da[dim].values.tolist():
            return None
        da = da.sel({dim: value})
    return da


def _pick_leads(da: xr.DataArray, leads) -> list:
    """Lead values of da with some finite data: the requested ones (numbers are hours), or first, middle, last."""
    finite = np.isfinite(da.transpose("lead_time", ...).values).reshape(da.sizes["lead_time"], -1).any(1)
    valid = da["lead_time"].values[finite]
    if leads is None:
        return list(dict.fromkeys(valid[[0, len(valid) // 2, -1]])) if len(valid) else []
    hours = (int, float, np.integer, np.floating)  # np.timedelta64 is an np.integer: not hours
    wanted = [pd.to_timedelta(x, unit="h") if isinstance(x, hours) and not isinstance(x, np.timedelta64)
              else pd.to_timedelta(x) for x in leads]
    return [x for x in valid if any(x == w.to_timedelta64() for w in wanted)]


def _title(var: str, level: int | None, region: str | None = None) -> str:
    return var + (f" {level} hPa" if level is not None else "") + (f", {region}" if region else "")


def _stem(*parts) -> str:
    """A safe file stem: the parts that are not None, joined by '_', odd characters replaced by '_'."""
    return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "_", str(p)).strip("_") for p in parts if p is not None)


def _write(figures: dict[str, Figure], out_dir, dpi: int = 110) -> list[Path]:
    """Save each figure as <out_dir>/<stem>.png, through a temporary name so no PNG is half-written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, fig in figures.items():
        path = out / f"{stem}.png"
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def skill_figures(scores: ScoresLike, region: str = "global", variables=None) -> dict[str, Figure]:
    """One figure per variable and level, x axis lead time in days, one colour per forecast (attrs['name']).

    Panels: fair CRPS (CRPS if the fair one was not scored); ensemble-mean RMSE solid with the ensemble
    spread dashed in the same colour; debiased spread/skill ratio with the reliable value 1 as a line.
    """
    scores = _as_list(scores)
    names = _names(scores)
    variables = _union(_variables(ds) for ds in scores) if variables is None else list(variables)
    figures = {}
    for var in variables:
        holders = [ds for ds in scores if var in ds]
        if not holders:
            continue
        units = holders[0][var].attrs.get("units", "")
        for level in _union(_levels(ds[var]) for ds in holders):
            fig = Figure(figsize=(13, 3.8), layout="constrained")
            axes = fig.subplots(1, 3)
            used: list[str | None] = [None, None, None]
            for i, (ds, name) in enumerate(zip(scores, names)):
                da = _pick(ds[var], region=region, level=level) if var in ds else None
                if da is None or "level" in da.dims:
                    continue
                have = da["metric"].values.tolist()
                for p, (ax, (candidates, _)) in enumerate(zip(axes, SKILL_PANELS)):
                    metric = next((m for m in candidates if m in have), None)
                    if metric is None:
                        continue
                    used[p] = used[p] or metric
                    pairs = [(metric, "-", name)] + ([("spread", "--", None)] if metric == "rmse" else [])
                    for m, ls, label in pairs:
                        if m not in have:
                            continue
                        y = da.sel(metric=m).values.astype(float)
                        x, ok = _days(da["lead_time"].values), np.isfinite(y)
                        ax.plot(x[ok], y[ok], ls=ls, color=f"C{i % 10}", marker=".", ms=3, label=label)
            if not any(used):
                continue
            for ax, metric, (_, has_units) in zip(axes, used, SKILL_PANELS):
                ax.set_xlabel("lead time [days]")
                ax.set_ylabel(_label(LABELS.get(metric, metric or "not scored"), units if has_units else ""))
                ax.grid(alpha=0.3)
            axes[2].axhline(1.0, color="k", lw=0.8, ls=":")
            axes[0].legend(fontsize="small")
            fig.suptitle(_title(var, level, region))
            figures[_stem("skill", var, level, None if region == "global" else region)] = fig
    return figures


def available_metric(ds, metric: str) -> str:
    """The metric, or for a one-member forecast (no fair CRPS) its CRPS: the absolute error, which is
    the CRPS of a deterministic forecast and what the fair CRPS estimates for an ensemble."""
    if metric == "crps_fair" and "metric" in ds.coords and metric not in ds["metric"].values:
        return "crps"
    return metric


def scorecard_figures(scores: ScoresLike, baseline: ScoresLike, metric: str = "crps_fair",
                      region: str = "global") -> dict[str, Figure]:
    """Per forecast: heat map of 100 (forecast - baseline) / baseline [%], rows variable@level, columns the
    lead times both scored (fair CRPS against a one-member baseline's CRPS, i.e. its absolute error). Diverging colours centred at 0, blue = better than the baseline (lower, or
    higher for ACC); grey = not scored or NaN; the numbers are written in the cells when they fit."""
    base = _as_list(baseline)[0]
    bname = str(base.attrs.get("name", "baseline"))
    scores = _as_list(scores)
    figures = {}
    for ds, name in zip(scores, _names(scores)):
        if ds is base:
            continue
        leads = np.intersect1d(ds["lead_time"].values, base["lead_time"].values)
        rows, labels = [], []
        for var in (v for v in _variables(ds) if v in base):
            for level in _levels(ds[var]):
                f = _pick(ds[var], metric=available_metric(ds, metric), region=region, level=level)
                b = _pick(base[var], metric=available_metric(base, metric), region=region, level=level)
                if f is None or b is None or f.ndim != 1 or b.ndim != 1:
                    continue
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = 100 * (f.sel(lead_time=leads).values - b.sel(lead_time=leads).values) / b.sel(
                        lead_time=leads).values
                rows.append(np.where(np.isfinite(rel), rel, np.nan))
                labels.append(var + (f"@{level}" if level is not None else ""))
        if not rows or not len(leads):
            continue
        rel = np.array(rows)
        finite = np.abs(rel[np.isfinite(rel)])
        lim = float(np.clip(finite.max() if finite.size else 1.0, 1.0, 100.0))
        cmap = matplotlib.colormaps["RdBu" if metric in HIGHER_IS_BETTER else "RdBu_r"].with_extremes(bad="0.85")
        nrow, ncol = rel.shape
        fig = Figure(figsize=(max(6.0, 0.28 * ncol + 3.5), max(2.8, 0.4 * nrow + 1.6)), layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(np.ma.masked_invalid(rel), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        days = _days(leads)
        ticks = [i for i, d in enumerate(days) if float(d).is_integer()] or list(range(ncol))  # whole days
        ticks = ticks[:: int(np.ceil(len(ticks) / 20))]
        ax.set_xticks(ticks, [f"{days[i]:g}" for i in ticks])
        ax.set_yticks(range(nrow), labels)
        ax.set_xlabel("lead time [days]")
        bar = fig.colorbar(im, ax=ax, extend="both" if finite.size and finite.max() > lim else "neither")
        bar.set_label(f"{metric} vs baseline [%]")
        if nrow * ncol <= MAX_ANNOTATED_CELLS:
            for (r, c), v in np.ndenumerate(rel):
                if np.isfinite(v):
                    ax.text(c, r, f"{v:+.0f}" if abs(v) >= 10 else f"{v:+.1f}", ha="center", va="center",
                            fontsize=6, color="w" if abs(v) > 0.6 * lim else "k")
        ax.set_title(f"{name} vs {bname} ({metric}, {region})")
        figures[_stem("scorecard", metric, name, "vs", bname, None if region == "global" else region)] = fig
    return figures


def spectra_figures(scores: ScoresLike, leads=None, level: int | None = None,
                    band=None) -> dict[str, Figure]:
    """Per forecast and variable, one column per lead (default first, middle, last): top, log-log power
    against total wavenumber (wavelength 2 pi R / l on the top axis); bottom, power against zonal
    wavenumber in one latitude band (default the first). Truth black, members blue, ensemble mean orange
    dashed: an ensemble mean loses power at small scales, members should keep the truth's. Level: the one
    asked for (variables with levels but not this one are skipped), else 500 hPa if scored, else the first."""
    scores = _as_list(scores)
    figures = {}
    for ds, name in zip(scores, _names(scores)):
        for var in _variables(ds):
            rows = []
            for kind, k in (("sh", "total_wavenumber"), ("zonal", "zonal_wavenumber")):
                da = ds.get(f"{var}_{kind}_spectrum")
                if da is not None and "band" in da.dims:
                    da = _pick(da, band=da["band"].values.tolist()[0] if band is None else band)
                if da is not None:
                    rows.append((kind, k, da))
            if not rows:
                continue
            levels = _levels(rows[0][2])
            lev = level if level is not None else (500 if 500 in levels else levels[0])
            picked = [(kind, k, _pick(da, level=lev)) for kind, k, da in rows]
            rows = [(kind, k, da) for kind, k, da in picked if da is not None]
            chosen = _pick_leads(rows[0][2], leads) if rows else []
            if not chosen:
                continue
            lev = lev if "level" in rows[0][2].coords else None
            units = ds[var].attrs.get("units", "")
            fig = Figure(figsize=(3.8 * len(chosen) + 1, 3.4 * len(rows)), layout="constrained")
            axes = fig.subplots(len(rows), len(chosen), squeeze=False, sharey="row")
            for r, (kind, k, da) in enumerate(rows):
                power_units = da.attrs.get("units") or (f"({units})**2" if " " in units else f"{units}**2")
                for c, lead in enumerate(chosen):
                    ax, one = axes[r, c], da.sel(lead_time=lead)
                    x = one[k].values.astype(float)
                    for src in one["source"].values.tolist():
                        y = one.sel(source=src).values.astype(float)
                        ok = (x > 0) & (y > 0) & np.isfinite(y)
                        ax.loglog(x[ok], y[ok], label=src, **SOURCE_STYLES.get(src, {}))
                    band_name = f" (band {one['band'].item()})" if "band" in one.coords else ""
                    ax.set_xlabel(k.replace("_", " ") + band_name)
                    ax.set_title(_lead_label(lead), fontsize="medium")
                    ax.grid(alpha=0.3, lw=0.5)
                    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
                    if kind == "sh":
                        wl = ax.secondary_xaxis("top", functions=(_wavelength, _wavelength))
                        wl.xaxis.set_major_locator(FixedLocator([20000, 10000, 5000, 2000, 1000, 500, 200, 100]))
                        wl.xaxis.set_major_formatter(FormatStrFormatter("%g"))
                        wl.xaxis.set_minor_locator(NullLocator())
                        wl.set_xlabel("wavelength [km]")
                    if c == 0:
                        ax.set_ylabel(_label(f"{kind.upper() if kind == 'sh' else kind} power", power_units))
                axes[r, 0].legend(fontsize="small")
            fig.suptitle(f"{name}: {_title(var, lev)}")
            figures[_stem("spectrum", name, var, lev)] = fig
    return figures


def _wavelength(k):
    """Wavenumber <-> wavelength in km on the Earth's great circle (its own inverse)."""
    return EARTH_CIRCUMFERENCE_KM / np.maximum(np.asarray(k, dtype=float), 1e-9)


def rank_histogram_figures(scores: ScoresLike, leads=None, region: str = "global") -> dict[str, Figure]:
    """Per forecast, variable and level, one panel per lead (default first, middle, last): frequency of
    the truth's rank among the M members, against the dashed flat line 1/(M+1) of a reliable ensemble.
    U shape: too little spread; dome: too much; slope: bias."""
    scores = _as_list(scores)
    figures = {}
    for ds, name in zip(scores, _names(scores)):
        for var in _variables(ds):
            hist = ds.get(f"{var}_rank_histogram")
            hist = None if hist is None else _pick(hist, region=region)
            if hist is None:
                continue
            for level in _levels(hist):
                one = _pick(hist, level=level)
                assert one is not None  # level is one of hist's levels
                chosen = _pick_leads(one, leads)
                if not chosen:
                    continue
                nbins = one.sizes["rank"]
                fig = Figure(figsize=(3.6 * len(chosen) + 1, 3.2), layout="constrained")
                axes = fig.subplots(1, len(chosen), squeeze=False, sharey=True)[0]
                for ax, lead in zip(axes, chosen):
                    ax.bar(np.arange(nbins), one.sel(lead_time=lead).values, width=0.85, color="C0")
                    ax.axhline(1.0 / nbins, color="k", ls="--", lw=1)
                    ax.set_title(_lead_label(lead), fontsize="medium")
                    ax.set_xlabel("rank of truth")
                axes[0].set_ylabel("frequency")
                fig.suptitle(f"{name}: {_title(var, level, region)} ({nbins - 1} members)")
                figures[_stem("rank", name, var, level, None if region == "global" else region)] = fig
    return figures


def skill_vs_lead(scores: ScoresLike, out_dir, region: str = "global", variables=None) -> list[Path]:
    """Write `skill_figures` as skill_<variable>[_<level>][_<region>].png; returns the paths."""
    return _write(skill_figures(scores, region, variables), out_dir)


def scorecard(scores: ScoresLike, baseline: ScoresLike, out_dir, metric: str = "crps_fair",
              region: str = "global") -> list[Path]:
    """Write `scorecard_figures` as scorecard_<metric>_<name>_vs_<baseline>[_<region>].png."""
    return _write(scorecard_figures(scores, baseline, metric, region), out_dir)


def spectra(scores: ScoresLike, out_dir, leads=None, level: int | None = None, band=None) -> list[Path]:
    """Write `spectra_figures` as spectrum_<name>_<variable>[_<level>].png."""
    return _write(spectra_figures(scores, leads, level, band), out_dir)


def rank_histograms(scores: ScoresLike, out_dir, leads=None, region: str = "global") -> list[Path]:
    """Write `rank_histogram_figures` as rank_<name>_<variable>[_<level>][_<region>].png."""
    return _write(rank_histogram_figures(scores, leads, region), out_dir)


def all_plots(scores_list: ScoresLike, out_dir, baseline: ScoresLike | None = None) -> list[Path]:
    """Skill curves of all forecasts (baseline included), scorecards against the baseline when one is given
    (a dataset, a path, or the name of one in the list), spectra and rank histograms; returns all paths."""
    scores = _as_list(scores_list)
    base = None
    if isinstance(baseline, str) and baseline in _names(scores):
        base = scores[_names(scores).index(baseline)]
    elif baseline is not None:
        base = _as_list(baseline)[0]
        if not any(ds is base for ds in scores):
            scores.append(base)
    paths = skill_vs_lead(scores, out_dir)
    if base is not None:
        paths += scorecard(scores, base, out_dir)
    return paths + spectra(scores, out_dir) + rank_histograms(scores, out_dir)


def paired_scorecard_figure(table: xr.Dataset, title: str, higher_is_better: bool = False,
                            faded_alpha: float = 0.3) -> Figure:
    """Scorecard with significance, as WeatherBench 2 (Rasp et al. 2024, JAMES 16) and ECMWF scorecards draw it.

    table: dims (baseline, channel, lead_time) with ratio (forecast score / baseline score), significant
    (bool: the interval of the ratio excludes 1), e.g. `weatherens.verify.paired.compare` of each
    channel concatenated; attrs confidence (0.95 when absent). One panel per baseline, rows the
    channels, columns the leads (labelled in days). Cell colour: 100 (ratio - 1) % on a diverging map
    centred at 0, blue = forecast better (ratio < 1; > 1 when `higher_is_better`), as `scorecard_figures`.
    Cells whose difference is significant are opaque with the percentage in bold; the others are faded
    (face alpha `faded_alpha` over white) and hatched, their number in grey; NaN cells are grey. The cells
    are PatchCollections per panel, labelled "significant", "not significant" and "missing".
    """
    from matplotlib.cm import ScalarMappable  # local: the module's imports belong to its older functions
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    table = table.transpose("baseline", "channel", "lead_time")
    rel = 100 * (table["ratio"].values.astype(np.float64) - 1)  # (baseline, channel, lead) [%]
    significant = table["significant"].values.astype(bool) & np.isfinite(rel)
    finite = np.abs(rel[np.isfinite(rel)])
    lim = float(np.clip(finite.max() if finite.size else 1.0, 1.0, 100.0))
    cmap, norm = matplotlib.colormaps["RdBu" if higher_is_better else "RdBu_r"], Normalize(-lim, lim)
    nbase, nrow, ncol = rel.shape
    fig = Figure(figsize=(max(6.0, 0.32 * ncol + 3.5), max(2.8, nbase * (0.4 * nrow + 0.8) + 1.0)),
                 layout="constrained")
    axes = fig.subplots(nbase, 1, sharex=True, squeeze=False)[:, 0]
    days = _days(table["lead_time"].values)
    ticks = [i for i, d in enumerate(days) if float(d).is_integer()] or list(range(ncol))  # whole days
    ticks = ticks[:: int(np.ceil(len(ticks) / 20))]
    for ax, name, r, s in zip(axes, table["baseline"].values, rel, significant):
        ax.set_facecolor("w")  # faded cells are their colour blended with white
        for label, mask in (("significant", s), ("not significant", ~s & np.isfinite(r)), ("missing", ~np.isfinite(r))):
            cells = np.argwhere(mask)  # (k, 2) rows, columns
            if not len(cells):
                continue
            colours = cmap(norm(np.nan_to_num(r[cells[:, 0], cells[:, 1]])))
            colours[:, :3] = 0.85 if label == "missing" else colours[:, :3]
            colours[:, 3] = faded_alpha if label == "not significant" else 1.0
            ax.add_collection(PatchCollection(
                [Rectangle((c - 0.5, row - 0.5), 1, 1) for row, c in cells], facecolors=colours,
                edgecolors="0.6" if label == "not significant" else "w", linewidths=0.0 if label == "not significant"
                else 0.6, hatch="///" if label == "not significant" else None, label=label))
        if nrow * ncol <= MAX_ANNOTATED_CELLS:
            for (row, c), v in np.ndenumerate(r):
                if np.isfinite(v):
                    ax.text(c, row, f"{v:+.0f}" if abs(v) >= 9.95 else f"{v:+.1f}", ha="center", va="center",
                            fontsize=6, fontweight="bold" if s[row, c] else "normal",
                            color=("w" if abs(v) > 0.6 * lim else "k") if s[row, c] else "0.35")
        ax.set_xlim(-0.5, ncol - 0.5)
        ax.set_ylim(nrow - 0.5, -0.5)
        ax.set_yticks(range(nrow), [str(c) for c in table["channel"].values])
        ax.set_title(f"vs {name}", fontsize=9)
    axes[-1].set_xticks(ticks, [f"{days[i]:g}" for i in ticks])
    axes[-1].set_xlabel("lead time [days]")
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes),
                       extend="both" if finite.size and finite.max() > lim else "neither")
    bar.set_label("100 (ratio - 1) [%]")
    confidence = float(table.attrs.get("confidence", 0.95))
    fig.suptitle(f"{title}\nfaded, hatched: the {100 * confidence:g} % interval includes 0", fontsize=10)
    return fig


def paired_scorecard(table: xr.Dataset, out_dir, name: str, higher_is_better: bool = False) -> list[Path]:
    """Write `paired_scorecard_figure(table, name)` as <out_dir>/paired_scorecard_<name>.png; returns the path."""
    return _write({_stem("paired_scorecard", name): paired_scorecard_figure(table, name, higher_is_better)},
                  out_dir)
