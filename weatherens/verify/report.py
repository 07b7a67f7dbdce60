"""The Markdown tables of a verification report: a scorecard with paired intervals and significance,
the skill fraction, spread-skill ratios and a spectrum check, from `weatherens verify`'s scores datasets.

Every table takes {name: scores dataset} with the forecast being judged first, the channels as
(variable, level or None) and the leads in hours; intervals are `paired`'s (AR(1)-inflated
t-intervals of the paired per-init differences, Geer 2016; moving-block bootstrap for the skill
fraction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import xarray as xr

from weatherens.verify import paired, plots


def global_score(scores: xr.Dataset, variable: str, level, metric: str, lead_h: int) -> float:
    """One global score of a scores dataset (NaN where the metric is absent; fair CRPS falls back to CRPS)."""
    da = scores[variable].sel(region="global")
    if level is not None:
        da = da.sel(level=level)
    metric = plots.available_metric(da, metric)
    if metric not in da["metric"].values:
        return float("nan")
    return float(da.sel(metric=metric, lead_time=np.timedelta64(lead_h, "h")))


def channel_label(variable: str, level) -> str:
    """'geopotential@500', or the variable's name for a single-level one."""
    return f"{variable}@{level}" if level else variable


def lead_label(hours: int) -> str:
    """'3 d' for whole days, '6 h' otherwise (the tables' columns and rows)."""
    return f"{hours // 24} d" if hours % 24 == 0 else f"{hours} h"


def per_init_crps(scores: xr.Dataset, variable: str, level) -> xr.DataArray:
    """(init_time, lead_time) global fair CRPS per init (a one-member forecast's CRPS: its absolute error)."""
    da = scores[f"{variable}_per_init"].sel(region="global")
    if level is not None:
        da = da.sel(level=level)
    return da.sel(score=plots.available_metric(scores, "crps_fair"))


def interval_table(scores: dict[str, xr.Dataset], channels: Sequence[tuple[str, int | None]]) -> xr.Dataset:
    """The first forecast's global fair CRPS against each other's: `paired.compare` per (baseline,
    channel, lead_time), i.e. the ratio of mean CRPS with its 95 % interval from the paired per-init
    differences (AR(1)-inflated t-interval, Geer 2016) and whether the difference is significant, at
    every lead. scores: {name: scores dataset}, the forecast first; channels: (variable, level or None)."""
    names = list(scores)
    ml, others = scores[names[0]], names[1:]
    rows = []
    for name in others:
        per_channel = []
        for variable, level in channels:
            if variable not in ml or variable not in scores[name]:
                continue
            table = paired.compare(per_init_crps(ml, variable, level), per_init_crps(scores[name], variable, level))
            per_channel.append(table.drop_vars([c for c in table.coords if c != "lead_time"])
                               .expand_dims(channel=[channel_label(variable, level)]))
        rows.append(xr.concat(per_channel, dim="channel").expand_dims(baseline=[name]))
    return xr.concat(rows, dim="baseline")


def skill_fraction_table(scores: dict[str, xr.Dataset], channels: Sequence[tuple[str, int | None]],
                         leads_h: Sequence[int], climatology: str = "climatology",
                         limit: str = "physics_limit") -> dict[tuple[str, int], paired.SkillFraction]:
    """{(channel, lead hours): paired.SkillFraction} of the first forecast between `climatology` (0) and
    the predictability `limit` (1), from the per-init fair CRPS (moving-block bootstrap interval);
    empty when either is not among the scores."""
    if not {climatology, limit} <= set(scores):
        return {}
    out = {}
    for variable, level in channels:
        series = [per_init_crps(scores[n], variable, level) for n in (climatology, list(scores)[0], limit)]
        for h in leads_h:
            clim_at, ml_at, limit_at = (s.sel(lead_time=np.timedelta64(h, "h")).values for s in series)
            out[(channel_label(variable, level), h)] = paired.skill_fraction(clim_at, ml_at, limit_at)
    return out


def ratio_cell(row: xr.Dataset) -> str:
    """'0.97 ± 0.02 ▼': the ratio, half its 95 % interval, ▼ / ▲ where significantly better / worse."""
    ratio, half = float(row["ratio"]), (float(row["high"]) - float(row["low"])) / 2
    if not np.isfinite(ratio):
        return "–"
    mark = (" ▼" if ratio < 1 else " ▲") if bool(row["significant"]) else ""
    digits = 3 if abs(ratio - 1) < 0.1 else 2
    return f"{ratio:.{digits}f} ± {half:.{digits}f}{mark}"


def scorecard(scores: dict[str, xr.Dataset], channels: Sequence[tuple[str, int | None]], leads_h: Sequence[int],
              table: xr.Dataset | None, fractions: dict | None = None) -> str:
    """Markdown table: the first forecast's global fair CRPS, its ratio to each baseline's with the 95 %
    interval and a significance mark (`interval_table`), its skill fraction (`skill_fraction_table`),
    RMSE and debiased SSR, per channel and lead. table: `interval_table(scores, channels)` (None: no
    baseline); fractions: `skill_fraction_table(...)` (None or empty: no column)."""
    leads = list(leads_h)
    fractions = fractions or {}
    name = list(scores)[0]
    others = [] if table is None else [str(b) for b in table["baseline"].values]
    head = ("| variable | lead | fair CRPS | " + " | ".join(f"÷ {n}" for n in others)
            + (" | skill fraction" if fractions else "") + " | RMSE | SSR (debiased) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    ml = scores[name]
    for variable, level in channels:
        if variable not in ml:
            continue
        label = channel_label(variable, level)
        for h in leads:
            cells = [] if table is None else [
                ratio_cell(table.sel(baseline=n, channel=label, lead_time=np.timedelta64(h, "h"))) for n in others]
            if fractions:
                f = fractions[(label, h)]
                cells.append(f"{f.value:.2f} [{f.low:.2f}, {f.high:.2f}]")
            lines.append(f"| {label} | {lead_label(h)} | {global_score(ml, variable, level, 'crps_fair', h):.4g} | "
                         + " | ".join(cells) + f" | {global_score(ml, variable, level, 'rmse', h):.4g} | "
                         f"{global_score(ml, variable, level, 'ssr_debiased', h):.2f} |")
    if table is None:
        return "\n".join(lines)
    n = int(table["n"].max())
    lines.append(f"\nRatios of mean fair CRPS (persistence: its absolute error) over {n} inits ± half the 95 % "
                 "interval from the paired per-init differences (t-interval, AR(1)-inflated for correlated inits: "
                 f"Geer 2016); ▼ / ▲: {name} significantly better / worse."
                 + (" Skill fraction: (CRPS_clim − CRPS_ML) / (CRPS_clim − CRPS_limit), 0 = climatology, 1 = the "
                    "predictability limit, [95 % block-bootstrap interval]." if fractions else ""))
    return "\n".join(lines)


def ssr_table(scores: dict[str, xr.Dataset], channels: Sequence[tuple[str, int | None]], leads_h: Sequence[int]) -> str:
    """Markdown table of the debiased spread-skill ratio of every ensemble (rows forecast x variable,
    columns leads): 1 is reliable, below 1 over-confident."""
    leads = list(leads_h)
    head = "| forecast | variable | " + " | ".join(map(lead_label, leads)) + " |"
    lines = [head, "|" + "---|" * (len(leads) + 2)]
    for name, ds in scores.items():
        for variable, level in channels:
            if variable not in ds or "ssr_debiased" not in ds["metric"].values:
                continue
            label = channel_label(variable, level)
            lines.append(f"| {name} | {label} | "
                         + " | ".join(f"{global_score(ds, variable, level, 'ssr_debiased', h):.2f}" for h in leads) + " |")
    return "\n".join(lines)


def spectra_check(scores: xr.Dataset, channels: Sequence[tuple[str, int | None]], max_degree: int) -> str:
    """Largest |members / truth - 1| of the SH power over degrees 1 <= l <= max_degree (the truth run's
    spectral truncation: above it the archived truth holds only interpolation residue), per variable and
    lead, in %."""
    rows = []
    for variable, level in channels:
        key = f"{variable}_sh_spectrum"
        if key not in scores:
            continue
        s = scores[key].sel(level=level) if level is not None else scores[key]
        degrees = s["total_wavenumber"]
        ratio = (s.sel(source="members") / s.sel(source="truth")).where((degrees >= 1) & (degrees <= max_degree),
                                                                        drop=True)
        worst = cast(xr.DataArray, np.abs(ratio - 1)).max("total_wavenumber").values * 100  # a DataArray ufunc
        rows.append(f"{channel_label(variable, level)}: " + ", ".join(
            f"{np.timedelta64(t, 'h').astype(int)} h {w:.0f} %" for t, w in zip(scores["lead_time"].values, worst)))
    return "\n".join(rows)
