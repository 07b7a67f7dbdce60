"""Partial scores of one block of a forecast, in numpy: the tasks `evaluation.evaluate` hands to dask.

A block is some init times x some latitude rows of a group of leads, with all members and levels; the
block functions get numpy-backed DataArrays (dask reads their inputs first, on the cluster's
workers when there is one) and return small per-init partial results that add up over latitude
blocks, so no task holds more than one block and nothing forms members x members:

- `pointwise_parts`: every pointwise metric (`metrics`) as its regional mean's share from these rows,
  (time, region[, level]); the three sums of the anomaly correlation; rank counts (region[, level], rank).
- `spectrum_sums`: spectra summed over init times and members (spectra need whole fields, so these
  blocks are some init times x some members instead).

Regional means use the normalised weight matrix of `regions.region_weights`: the mean over region r is
sum_lat W[r, lat] * mean_lon(x), the WB2 latitude-weighted mean (`regions.spatial_mean`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import xarray as xr

from weatherens.data.names import LEAD_DIM as LEAD
from weatherens.data.names import MEMBER_DIM as MEMBER
from weatherens.verify import metrics, spectra
from weatherens.verify.regions import regional
SPECTRA = ("sh_spectrum", "zonal_spectrum")


POINTWISE_PARTS = ("crps", "crps_fair", "mse", "var", "acc", "ranks")  # what `pointwise_parts` can compute


def pointwise_parts(f, t, clim, thresholds, w, rank_seed: int,
                    parts: frozenset[str] = frozenset(POINTWISE_PARTS)) -> dict[str, xr.DataArray]:
    """Partial scores of one block.

    Args:
      f: forecast (time, prediction_timedelta, number[, level], latitude, longitude), numpy-backed,
         physical units (the lead dim is optional: any dims besides number are kept or pooled as below).
      t: truth at the valid times, the same dims without `number`.
      clim: climatology at the valid times (or static), broadcastable to t; unused without "acc".
      thresholds: {name: threshold} with scalar or (level, latitude, longitude) thresholds.
      w: `regions.region_weights` restricted to this block's latitude rows.
      rank_seed: seed of this block's random tie-breaking in the ranks.
      parts: which of POINTWISE_PARTS to compute ("crps_fair" and "var" need two members or more).

    Returns {name: (time[, prediction_timedelta], region[, level])} regional-mean shares for "crps", "mse", "crps_fair",
    "var", "brier>..", "brier_debiased>.."; "acc_fo", "acc_ff", "acc_oo" (the weighted means of
    f'o', f'^2, o'^2 for the anomaly correlation); "rank_counts" ([prediction_timedelta, ]region[, level], rank) the
    weighted counts of each rank pooled over init times and space; each only when its part is asked for.
    """
    members = f.sizes[MEMBER]
    pointwise = {}
    if "crps" in parts:
        pointwise["crps"] = metrics.crps_ecdf(f, t, MEMBER)
    if "mse" in parts:
        pointwise["mse"] = metrics.ensemble_mean_squared_error(f, t, MEMBER)
    if members > 1 and "crps_fair" in parts:
        pointwise["crps_fair"] = metrics.crps_fair(f, t, MEMBER)
    if members > 1 and "var" in parts:
        pointwise["var"] = metrics.ensemble_variance(f, MEMBER)
    for name, thr in thresholds.items():
        pointwise[f"brier>{name}"] = metrics.brier_score(f, t, thr, MEMBER)
        if members > 1:
            pointwise[f"brier_debiased>{name}"] = metrics.brier_score(f, t, thr, MEMBER, debiased=True)
    out = {k: regional(v, w) for k, v in pointwise.items()}
    if "acc" in parts:
        fa = f.mean(MEMBER, dtype=np.float64) - clim
        oa = t.astype(np.float64) - clim
        out.update(acc_fo=regional(fa * oa, w), acc_ff=regional(fa * fa, w), acc_oo=regional(oa * oa, w))
    if "ranks" in parts:
        ranks = metrics.ranks(f, t, MEMBER, seed=rank_seed)
        pooled = [d for d in ranks.dims if d in ("time", "latitude", "longitude")]
        out["rank_counts"] = metrics.rank_histogram(ranks, members, w, dims=pooled, normalize=False)
    return out


def truth_at_leads(t_unique: xr.DataArray, t_map: np.ndarray, inits: np.ndarray, leads: np.ndarray) -> xr.DataArray:
    """The truth (time, prediction_timedelta, ...) of a block: t_unique holds its distinct valid times
    (time first), t_map (init, lead) the position of each init + lead among them."""
    rest = t_unique.dims[1:]
    coords = {"time": inits, LEAD: leads, **{d: t_unique[d].values for d in rest if d in t_unique.coords}}
    return xr.DataArray(t_unique.values[t_map], dims=("time", LEAD) + rest, coords=coords, name=t_unique.name,
                        attrs=t_unique.attrs)


def block_parts(f, t_unique, t_map, clim, thresholds, w, rank_seed: int, parts: frozenset[str],
                spectra_budget: int | None) -> dict:
    """`pointwise_parts` of one block whose truth is given as (t_unique, t_map) (`truth_at_leads`); with
    `spectra_budget` (bytes of transform work at a time), also, under "spectra", the block's
    `spectrum_sums` of the truth, the members and the ensemble mean (the block then holds whole fields)."""
    t = truth_at_leads(t_unique, t_map, f["time"].values, f[LEAD].values)
    out: dict = pointwise_parts(f, t, clim, thresholds, w, rank_seed, parts)
    if spectra_budget is not None:
        out["spectra"] = {"truth": spectrum_sums_in_pieces(t, spectra_budget),
                          "members": spectrum_sums_in_pieces(f, spectra_budget),
                          "ensemble_mean": spectrum_sums_in_pieces(f.mean(MEMBER), spectra_budget)}
    return out


def truth_spectrum_sums(t_unique, t_map, inits, leads, budget: int) -> dict[str, xr.DataArray]:
    """`spectrum_sums_in_pieces` of a block's truth given as in `truth_at_leads`."""
    return spectrum_sums_in_pieces(truth_at_leads(t_unique, t_map, inits, leads), budget)


def ensemble_mean_spectrum_sums(f: xr.DataArray, budget: int) -> dict[str, xr.DataArray]:
    return spectrum_sums_in_pieces(f.mean(MEMBER), budget)


def spectrum_sums_in_pieces(x: xr.DataArray, budget: int) -> dict[str, xr.DataArray]:
    """`spectrum_sums` of x taken a few (init time, member) fields at a time, so that the float64 copy
    and the transforms (~32 bytes per point) stay within `budget` bytes; the sums add up exactly."""
    field = 32 * int(np.prod([n for d, n in x.sizes.items() if d not in ("time", MEMBER)]))
    members = x.sizes.get(MEMBER, 1)
    per_member = max(1, min(members, budget // field))
    per_time = max(1, budget // (field * members)) if per_member == members else 1
    total: dict[str, xr.DataArray] = {}
    for time in block_starts(x.sizes["time"], per_time):
        for mem in block_starts(members, per_member) if MEMBER in x.dims else [None]:
            piece = x.isel(time=slice(*time))
            if mem is not None:
                piece = piece.isel({MEMBER: slice(*mem)})
            for k, v in spectrum_sums(piece).items():
                total[k] = v if k not in total else total[k] + v
    return total


def spectrum_sums(x: xr.DataArray) -> dict[str, xr.DataArray]:
    """Spectra of x (time[, prediction_timedelta][, number][, level], latitude, longitude) summed over
    time and members.

    Returns {"sh_spectrum": (..., total_wavenumber), "zonal_spectrum": (..., band, zonal_wavenumber),
    and for each "<name>_count": the number of fields summed (NaN spectra left out)}.
    """
    reduce = [d for d in ("time", MEMBER) if d in x.dims]
    out = {}
    spectrum_fns: tuple[Callable[[xr.DataArray], xr.DataArray], ...] = (spectra.sh_power_spectrum,
                                                                         spectra.zonal_spectrum_by_band)
    for name, spectrum in zip(SPECTRA, spectrum_fns):
        s = spectrum(x)
        out[name] = s.sum(reduce, skipna=True)
        out[f"{name}_count"] = s.notnull().sum(reduce)
    return out


def block_starts(n: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) pairs tiling range(n) in pieces of at most `size`."""
    size = max(1, int(size))
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def aligned_blocks(units: tuple[int, ...], size: int) -> list[tuple[int, int]]:
    """(start, stop) pairs tiling range(sum(units)) in pieces of at most `size` that cut only between
    units (stored chunks: each then belongs to one piece), packing as many whole consecutive units as
    fit; a unit longer than `size` is cut into pieces of `size` (its chunk is then shared, read once
    by dask, by the pieces)."""
    size = max(1, int(size))
    out: list[tuple[int, int]] = []
    start = stop = 0
    for n in units:
        if n > size:
            if stop > start:
                out.append((start, stop))
            out += [(stop + a, stop + b) for a, b in block_starts(n, size)]
            start = stop = stop + n
        elif stop + n - start > size:
            out.append((start, stop))
            start, stop = stop, stop + n
        else:
            stop += n
    if stop > start:
        out.append((start, stop))
    return out
