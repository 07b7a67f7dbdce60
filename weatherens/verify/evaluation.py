"""Score forecasts against the truth: metrics per lead time, region and level (`verify`, `evaluate`).

The steps, per variable and lead time (WeatherBench 2's order of reductions):
1. the truth at valid time = init + lead (inits without it are left out and counted);
2. pointwise scores over the member dim (`metrics`), then the latitude-weighted mean over each
   region per init time;
3. the mean over init times; RMSE and spread take the square root after that mean.

Leads are scored in groups, each cut into blocks of init times x latitude rows (all members and
levels together), each scored by one coarse dask task in numpy (`partial_scores`) whose working
set stays bounded; a block returns per-init regional partial means, which add up over latitude
blocks. The blocks follow the forecast's stored chunks and read each chunk once (`blocks`), so
memory is bounded by one block (and one stored chunk) whatever the ensemble size, and members x
members is never formed. All tasks of a variable run in parallel, over init times and
leads, on the local threads or on the `dask.distributed` cluster whose client is active
(`weatherens verify --scheduler ADDRESS`).
"""

from __future__ import annotations

import logging
import contextlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import dask
import numpy as np
from dask.callbacks import Callback
from dask.delayed import Delayed
import xarray as xr
from tqdm import tqdm

from weatherens.data import era5
from weatherens.errors import InputError
from weatherens.verify import blocks, io, metrics, partial_scores, spectra
from weatherens.verify.shared_chunks import SharedChunks
from weatherens.verify.regions import region_weights

log = logging.getLogger(__name__)

REGIONS = ("global", "tropics", "extratropics_nh", "extratropics_sh")
BASE_METRICS = ("crps", "crps_fair", "rmse", "spread", "ssr", "ssr_debiased", "acc")
# Per-init regional means written as `v_per_init`: what paired comparisons of two forecasts need
# (`weatherens.verify.paired`); RMSE and spread are the square roots of the init-mean of mse and var.
PER_INIT_METRICS = ("crps", "crps_fair", "mse", "var")
SOURCES = ("truth", "members", "ensemble_mean")
# What `evaluate(metrics=...)` and `weatherens verify --metrics` can ask for, and the pointwise parts
# (`partial_scores.POINTWISE_PARTS`) each needs; Brier scores come with thresholds whatever is asked.
METRIC_PARTS = {
    "crps": {"crps"}, "crps_fair": {"crps_fair"}, "rmse": {"mse"}, "spread": {"var"}, "ssr": {"mse", "var"},
    "ssr_debiased": {"mse", "var"}, "acc": {"acc"}, "rank_histogram": {"ranks"}, "spectra": set(),
}


def metric_parts(metrics: Sequence[str] | None) -> tuple[frozenset[str], bool]:
    """(the pointwise parts to compute, whether to compute spectra) for the asked metrics (None: all)."""
    asked = list(METRIC_PARTS) if metrics is None else list(metrics)
    unknown = [m for m in asked if m not in METRIC_PARTS]
    if unknown:
        raise InputError(f"--metrics: unknown metric(s) {unknown}; choose from {list(METRIC_PARTS)}")
    return frozenset().union(*(METRIC_PARTS[m] for m in asked)), "spectra" in asked


def parse_threshold(spec: str) -> tuple[str, float, bool]:
    """'273.15' -> exceedance of a value; 'q0.9' -> of the truth's 0.9 quantile at each point."""
    m = re.fullmatch(r"\s*(q)?([-+0-9.eE]+)\s*", str(spec))
    if not m:
        raise ValueError(f"threshold {spec!r}: expected a number (e.g. 273.15) or a quantile (e.g. q0.9)")
    is_q, value = bool(m.group(1)), float(m.group(2))
    if is_q and not 0 < value < 1:
        raise ValueError(f"threshold {spec!r}: quantile must lie in (0, 1)")
    return (f"q{value:g}" if is_q else f"{value:g}"), value, is_q


def _thresholds(t_span: xr.DataArray, parsed) -> dict[str, object]:
    """Thresholds by name: values as floats; quantiles of the truth over the scored valid times, per point."""
    out = {n: val for n, val, is_q in parsed if not is_q}
    quantile = {n: val for n, val, is_q in parsed if is_q}
    if quantile:
        row = t_span.sizes["time"] * t_span.sizes.get("level", 1) * t_span.sizes["longitude"] * 8
        lat_chunk = int(max(1, min(t_span.sizes["latitude"], blocks.BLOCK_BYTES // row)))
        series = t_span.chunk({"time": -1, "latitude": lat_chunk})
        (values,) = dask.compute({n: series.quantile(q, dim="time").drop_vars("quantile") for n, q in quantile.items()})
        out.update(values)
    return out


def climatology_at(clim: xr.DataArray, valid: np.ndarray) -> xr.DataArray:
    """Climatology at valid times: WB2 (dayofyear, hour) climatologies, or a static mean field."""
    if "dayofyear" in clim.dims:
        times = xr.DataArray(valid, dims="time")
        sel = {"dayofyear": times.dt.dayofyear}
        if "hour" in clim.dims:
            sel["hour"] = times.dt.hour
        return clim.sel(sel, method="nearest").drop_vars(["dayofyear", "hour"], errors="ignore")
    return clim


def _one_lead(finished, j: int):
    """The j-th lead of a finished group (every array has the lead dim)."""
    if isinstance(finished, dict):
        return {k: _one_lead(v, j) for k, v in finished.items()}
    return finished.isel({io.LEAD: j}, drop=True)


def _active_client():
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


class _TaskBar(Callback):
    """Advances a tqdm bar as each of the given task keys finishes (local dask schedulers)."""

    def __init__(self, keys, bar):
        super().__init__()
        self.keys, self.bar = set(keys), bar

    def _posttask(self, key, result, dsk, state, worker_id):
        if key in self.keys:
            self.bar.update()


def _compute(tasks: list[tuple[tuple, Delayed]], bar) -> list[tuple[tuple, object]]:
    """Run the tasks (on the active dask.distributed client if any), advancing the bar per task."""
    delayed = [d for _, d in tasks]
    bar.total = (bar.total or 0) + len(delayed)
    bar.refresh()
    client = _active_client()
    if client is not None:
        from distributed import as_completed

        futures = client.compute(delayed)
        for _ in as_completed(futures):
            bar.update()
        results = client.gather(futures)
    else:
        with _TaskBar([d.key for d in delayed], bar):
            results = dask.compute(*delayed)
    return [(tag, r) for (tag, _), r in zip(tasks, results)]


def _finish_group(results: list[tuple[tuple, dict]], members: int) -> dict:
    """From the blocks of one group of leads to its scores (each with the lead dim): per-init regional
    means summed over latitude blocks, then means over init times (RMSE and spread: square root
    after); rank counts pooled over inits and space; mean spectra."""
    by_time: dict[int, dict] = {}
    counts = None
    spectra_parts: dict[str, list[dict]] = {}
    for tag, part in results:
        if tag[1] == "pointwise":
            rank_counts = part.pop("rank_counts", None)
            if rank_counts is not None:
                counts = rank_counts if counts is None else counts + rank_counts
            for source, sums in part.pop("spectra", {}).items():
                spectra_parts.setdefault(source, []).append(sums)
            acc = by_time.setdefault(tag[2], {})
            for k, v in part.items():
                acc[k] = v if k not in acc else acc[k] + v
        else:
            spectra_parts.setdefault(tag[1], []).append(part)
    per_init = {k: xr.concat([by_time[i][k] for i in sorted(by_time)], dim="time") for k in by_time[min(by_time)]}
    means = {k: v.mean("time") for k, v in per_init.items() if not k.startswith("acc_")}
    metric = {k: means[k] for k in ("crps", "crps_fair") if k in means}
    if "acc_fo" in per_init:
        metric["acc"] = (per_init["acc_fo"] / np.sqrt(per_init["acc_ff"] * per_init["acc_oo"])).mean("time")
    if "var" in means and "mse" in means:
        spread, rmse, ssr, ssr_debiased = metrics.spread_skill(means["var"], means["mse"], members)
        metric.update(spread=spread, rmse=rmse, ssr=ssr, ssr_debiased=ssr_debiased)
    elif "mse" in means:
        metric["rmse"] = np.sqrt(means["mse"])
    elif "var" in means:
        metric["spread"] = np.sqrt(means["var"])
    metric.update({k: v for k, v in means.items() if k.startswith("brier")})
    kept = [k for k in PER_INIT_METRICS if k in per_init]
    out: dict = {"metric": metric}
    if kept:
        out["per_init"] = xr.concat([per_init[k] for k in kept], dim="score").assign_coords(score=kept)
    if counts is not None:
        out["rank_histogram"] = (counts / counts.sum("rank")).transpose("region", ..., "rank")
    for name in partial_scores.SPECTRA:
        if not spectra_parts:
            break
        mean_spectra = []
        for source in SOURCES:
            parts = spectra_parts[source]
            total = sum(p[name] for p in parts) / sum(p[f"{name}_count"] for p in parts)
            mean_spectra.append(total.assign_attrs(parts[0][name].attrs))
        out[name] = xr.concat(mean_spectra, dim="source").assign_coords(source=list(SOURCES))
    return out


def _variable_tasks(f_all: xr.DataArray, t_all: xr.DataArray, climatology: xr.DataArray | None, parsed,
                    w: xr.DataArray, seed: int, parts: frozenset[str], with_spectra: bool):
    """Task building for one variable: the truth at each lead's valid times, the climatology and
    thresholds, and the dask tasks of each group of leads.

    Returns (tasks, groups: the lead indices of each group, n_init per lead, the leads without truth)."""
    inits, leads = f_all["time"].values, f_all[io.LEAD].values
    valid = np.intersect1d((inits[:, None] + leads[None, :]).ravel(), t_all["time"].values)
    t_span = t_all.sel(time=valid)
    clim_v: xr.DataArray | None = None
    if "acc" not in parts:
        pass  # the climatology serves the anomaly correlation only
    elif climatology is not None:
        clim_v = io.match_grid(climatology, f_all, "climatology")
    elif valid.size:
        clim_v = t_span.mean("time")
    thresholds_v = _thresholds(t_span, parsed) if valid.size else {}
    if clim_v is not None and "dayofyear" not in clim_v.dims:
        (clim_v,) = dask.compute(clim_v)
    truth_times = t_all["time"].values
    scored, n_init, lacking = [], [], []
    for i, lead in enumerate(leads):
        have = np.isin(inits + lead, truth_times)
        n_init.append(int(have.sum()))
        if not have.any():
            lacking.append(f"{lead / np.timedelta64(1, 'h'):g} h")
            continue
        scored.append((i, have))
    tasks, groups = [], []
    src_f, src_t = SharedChunks(f_all), SharedChunks(t_all)
    for g, group in enumerate(blocks.lead_groups(scored, blocks.leads_per_block(f_all), blocks.chunk_of(f_all, io.LEAD))):
        idx, have = [i for i, _ in group], group[0][1]
        lead_coord = {io.LEAD: leads[idx]}
        ipos = np.flatnonzero(have)
        t_pos = np.searchsorted(truth_times, inits[ipos][:, None] + leads[idx][None, :])
        clim: xr.DataArray | None = clim_v
        if clim_v is not None and "dayofyear" in clim_v.dims:
            clim = xr.concat([climatology_at(clim_v, inits[have] + leads[i]).assign_coords(time=inits[have])
                              for i in idx], dim=io.LEAD).assign_coords(lead_coord).transpose("time", io.LEAD, ...)
        tasks += blocks.group_tasks(g, src_f, src_t, f_all, ipos, idx, t_pos, clim, thresholds_v, w, seed, parts,
                              with_spectra)
        groups.append(idx)
    return tasks, groups, n_init, lacking


def _reduce(tasks, groups: list[list[int]], members: int, n_leads: int, bar) -> list[dict | None]:
    """Reduction: run the tasks and add up each group's partial scores into per-lead results (None
    where a lead had no truth)."""
    results: dict[int, list] = {}
    for tag, part in _compute(tasks, bar):
        results.setdefault(tag[0], []).append((tag, part))
    per_lead: list[dict | None] = [None] * n_leads
    for g, idx in enumerate(groups):
        finished = _finish_group(results[g], members)
        for j, i in enumerate(idx):
            per_lead[i] = _one_lead(finished, j)
    return per_lead


def evaluate(
    forecast: xr.Dataset,
    truth: xr.Dataset,
    *,
    variables: Sequence[str] | None = None,
    regions: Sequence[str] = REGIONS,
    climatology: xr.Dataset | None = None,
    thresholds: Sequence[str] = (),
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    name: str = "forecast",
    progress: bool = True,
) -> xr.Dataset:
    """Scores of `forecast` (from `io.open_forecast`) against `truth` (`io.open_truth`).

    Returns the scores dataset of docs/architecture.md: per variable v, `v` (metric, lead_time, region
    [, level]); `v_per_init` (score, init_time, lead_time, region[, level]): the regional means of
    PER_INIT_METRICS per init time before the mean over inits (NaN where an init has no truth at that
    lead); `v_rank_histogram` (lead_time, region [, level], rank); `v_sh_spectrum` and
    `v_zonal_spectrum` (source, lead_time, ... wavenumber); `v_n_init` (lead_time). Variables and
    leads without truth are listed in attrs['missing'] and scored NaN, never dropped silently.
    `metrics` (names of METRIC_PARTS; None: all) limits what is computed and written: e.g.
    ["crps_fair", "rmse", "spread"] skips the ecdf CRPS, the anomaly correlation, the ranks and the
    spectra (their variables are then absent); thresholds add Brier scores whatever is asked.
    Without a climatology, ACC uses the truth's own time mean at each point (right for the
    seasonless physics world; pass a WB2 climatology for ERA5).
    """
    store_f, store_t = forecast.attrs.get("source", "forecast"), truth.attrs.get("source", "truth")
    variables = list(variables) if variables else [str(v) for v in forecast.data_vars]
    w = region_weights(forecast["latitude"].values, regions)
    parsed = [parse_threshold(s) for s in thresholds]
    inits, leads = forecast["time"].values, forecast[io.LEAD].values
    members = forecast.sizes[io.MEMBER]
    parts, with_spectra = metric_parts(metrics)
    missing: dict[str, list[str]] = {}
    out: dict[str, xr.DataArray] = {}

    bar = tqdm(total=0, desc=f"verify {name}", unit="block", disable=not progress)
    for v in variables:
        if v not in truth.data_vars:
            missing[v] = ["all leads: variable not in truth"]
            continue
        t_all = io.match_levels(io.match_grid(truth[v], forecast[v], store_t), forecast[v], store_t)
        clim_v = None if climatology is None or v not in climatology else climatology[v]
        tasks, groups, n_init, lacking = _variable_tasks(forecast[v], t_all, clim_v, parsed, w, seed, parts,
                                                         with_spectra)
        if lacking:
            missing[v] = lacking
        per_lead = _reduce(tasks, groups, members, len(leads), bar)
        scored = _assemble(v, forecast[v], per_lead, leads, n_init, inits)
        if metrics is not None and v in scored:  # derived extras (ssr from rmse and spread) only when asked
            names = scored[v]["metric"].values.tolist()
            scored[v] = scored[v].sel(metric=[m for m in names if m in metrics or m.startswith("brier")])
        out.update(scored)
    bar.close()
    scores = xr.Dataset(out)
    scores.attrs.update(
        name=name, forecast=str(store_f), truth=str(store_t), members=int(members),
        missing=json.dumps(missing), regions=" ".join(regions),
        conventions="WeatherBench 2: latitude-weighted spatial mean per init time, then mean over init times; "
                    "RMSE and spread: square root after the mean",
    )
    return scores


def _stack(items, leads, template_dim: str) -> xr.DataArray | None:
    present = [x for x in items if x is not None]
    if not present:
        return None
    filler = xr.full_like(present[0], np.nan, dtype=float)
    return xr.concat([filler if x is None else x for x in items], dim="lead_time").assign_coords(lead_time=leads)


def _assemble(v, f_all, per_lead, leads, n_init, inits) -> dict[str, xr.DataArray]:
    units = f_all.attrs.get("units", "")
    names = sorted({m for p in per_lead if p for m in p["metric"]}, key=lambda m: (
        BASE_METRICS.index(m) if m in BASE_METRICS else len(BASE_METRICS), m))
    out = {}
    if names:
        by_metric = []
        for m in names:
            items = [None if p is None or m not in p["metric"] else p["metric"][m] for p in per_lead]
            by_metric.append(cast(xr.DataArray, _stack(items, leads, "lead_time")))  # m is some lead's: not None
        da = xr.concat(by_metric, dim="metric").assign_coords(metric=names)
        order: list[str] = [d for d in ("metric", "lead_time", "region", "level") if d in da.dims]
        out[v] = da.transpose(*order).assign_attrs(units=units)
    for key in ("rank_histogram", "sh_spectrum", "zonal_spectrum"):
        stacked = _stack([None if p is None else p.get(key) for p in per_lead], leads, "lead_time")
        if stacked is not None:
            power = spectra.squared_units(units)
            out[f"{v}_{key}"] = stacked.assign_attrs(units={"rank_histogram": "1", "sh_spectrum": power,
                                                            "zonal_spectrum": f"{power} m".strip()}[key])
    per_init = _stack([None if p is None or "per_init" not in p else p["per_init"].reindex(time=inits)
                       for p in per_lead], leads, "lead_time")
    if per_init is not None:
        per_init = per_init.rename(time="init_time")
        order = [d for d in ("score", "init_time", "lead_time", "region", "level") if d in per_init.dims]
        out[f"{v}_per_init"] = (per_init.transpose(*order)
                                .assign_attrs(units=units, description="regional mean per init time; mse and var in "
                                              "squared units"))
    out[f"{v}_n_init"] = xr.DataArray(np.array(n_init), dims="lead_time", coords={"lead_time": leads})
    return out


@contextlib.contextmanager
def _scheduler(address: str | None):
    if not address:
        yield None
        return
    from dask.distributed import Client  # optional: pip install "dask[distributed]"

    with Client(address) as client:
        yield client


def verify(
    forecasts: Sequence[str],
    truth: str,
    out: Path,
    *,
    names: Sequence[str] | None = None,
    climatology: str | None = None,
    variables: Sequence[str] | None = None,
    regions: Sequence[str] = REGIONS,
    thresholds: Sequence[str] = (),
    plots: Path | None = None,
    baseline: str | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    spectra_of: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Score every forecast against `truth`; returns the scores files written.

    With `plots`, draws skill-vs-lead (all forecasts together), spectra and rank histograms,
    and a scorecard of the first forecast against `baseline` (a name; default the second forecast).
    `metrics` as in `evaluate` (None: all); spectra, where asked for, only for the forecasts named in
    `spectra_of` (default: all).
    """
    metric_parts(metrics)  # unknown names fail before anything is read
    names = list(names) if names else [Path(str(f).rstrip("/")).stem for f in forecasts]
    if len(names) != len(forecasts) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per forecast, got {names} for {len(forecasts)} forecasts")
    truth_ds = io.open_truth(truth)
    clim = era5.open(climatology) if climatology else None
    written, all_scores = [], []
    with _scheduler(scheduler):
        for path, name in zip(forecasts, names):
            fc_ds = io.open_forecast(path, variables)
            asked = list(METRIC_PARTS) if metrics is None else list(metrics)
            if spectra_of is not None and name not in spectra_of:
                asked = [m for m in asked if m != "spectra"]
            scores = evaluate(fc_ds, truth_ds, regions=regions, climatology=clim, thresholds=thresholds,
                              seed=seed, metrics=asked, name=name, progress=progress)
            target = io.scores_path(Path(out), name, len(forecasts) > 1)
            io.write_scores(scores, target)
            written.append(target)
            all_scores.append(scores)
            missing = json.loads(scores.attrs["missing"])
            if missing:
                log.warning("verify: %s: no truth for %s", name, missing)
    if plots is not None:
        from weatherens.verify import plots as plots_mod

        base = None
        if baseline is not None:
            if baseline not in names:
                raise ValueError(f"baseline {baseline!r} is not one of the forecasts {names}")
            base = all_scores[names.index(baseline)]
        elif len(all_scores) > 1:
            base = all_scores[1]
        plots_mod.all_plots(all_scores, Path(plots), baseline=base)
    return written
