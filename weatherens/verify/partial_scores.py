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

from weatherens.data.names import MEMBER_DIM as MEMBER
from weatherens.verify import metrics, spectra
from weatherens.verify.regions import regional
SPECTRA = ("sh_spectrum", "zonal_spectrum")


def pointwise_parts(f, t, clim, thresholds, w, rank_seed: int) -> dict[str, xr.DataArray]:
    """Partial scores of one block.

    Args:
      f: forecast (time, prediction_timedelta, number[, level], latitude, longitude), numpy-backed,
         physical units (the lead dim is optional: any dims besides number are kept or pooled as below).
      t: truth at the valid times, the same dims without `number`.
      clim: climatology at the valid times (or static), broadcastable to t.
      thresholds: {name: threshold} with scalar or (level, latitude, longitude) thresholds.
      w: `regions.region_weights` restricted to this block's latitude rows.
      rank_seed: seed of this block's random tie-breaking in the ranks.

    Returns {name: (time[, prediction_timedelta], region[, level])} regional-mean shares for "crps", "mse", "crps_fair",
    "var", "brier>..", "brier_debiased>.."; "acc_fo", "acc_ff", "acc_oo" (the weighted means of
    f'o', f'^2, o'^2 for the anomaly correlation); "rank_counts" ([prediction_timedelta, ]region[, level], rank) the
    weighted counts of each rank pooled over init times and space.
    """
    members = f.sizes[MEMBER]
    pointwise = {
        "crps": metrics.crps_ecdf(f, t, MEMBER),
        "mse": metrics.ensemble_mean_squared_error(f, t, MEMBER),
    }
    if members > 1:
        pointwise["crps_fair"] = metrics.crps_fair(f, t, MEMBER)
        pointwise["var"] = metrics.ensemble_variance(f, MEMBER)
    for name, thr in thresholds.items():
        pointwise[f"brier>{name}"] = metrics.brier_score(f, t, thr, MEMBER)
        if members > 1:
            pointwise[f"brier_debiased>{name}"] = metrics.brier_score(f, t, thr, MEMBER, debiased=True)
    out = {k: regional(v, w) for k, v in pointwise.items()}
    fa = f.mean(MEMBER, dtype=np.float64) - clim
    oa = t.astype(np.float64) - clim
    out.update(acc_fo=regional(fa * oa, w), acc_ff=regional(fa * fa, w), acc_oo=regional(oa * oa, w))
    ranks = metrics.ranks(f, t, MEMBER, seed=rank_seed)
    pooled = [d for d in ranks.dims if d in ("time", "latitude", "longitude")]
    out["rank_counts"] = metrics.rank_histogram(ranks, members, w, dims=pooled, normalize=False)
    return out


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
