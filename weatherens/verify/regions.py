"""Regions and latitude-weighted spatial means (WeatherBench 2 conventions): the one home of area weighting
in verification (`spatial_mean` for whole fields, `region_weights` / `regional` for the blockwise sums).

Region boundaries follow WeatherBench 2 (`weatherbench2/regions.py`, `SliceRegion`), whose
latitude slices select with `xarray.sel(latitude=slice(a, b))`, inclusive at both ends:

    global            all latitudes
    tropics           -20 <= lat <= 20
    extratropics_nh    20 <= lat <= 90
    extratropics_sh   -90 <= lat <= -20

so a grid row lying exactly on +-20 degrees (e.g. 0.25 or 2.5 degree grids with poles) belongs to both
the tropics and the adjacent extratropics, as in WB2; on grids without such a row (64 x 32, 1.5 degrees)
the three regions partition the globe. Either way global is their union.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import xarray as xr

from weatherens import grid

SPATIAL_DIMS = ("latitude", "longitude")

_LAT_BOUNDS = {
    "global": (-90.0, 90.0),
    "tropics": (-20.0, 20.0),
    "extratropics_nh": (20.0, 90.0),
    "extratropics_sh": (-90.0, -20.0),
}


def region_masks(lat: npt.ArrayLike) -> dict[str, np.ndarray]:
    """Boolean masks over latitude, shape (nlat,), for each region, bounds inclusive (see module doc)."""
    lat = np.asarray(lat, dtype=np.float64)
    return {name: (lat >= lo) & (lat <= hi) for name, (lo, hi) in _LAT_BOUNDS.items()}


def as_spatial(values: npt.ArrayLike | xr.DataArray, name: str) -> xr.DataArray:
    """A DataArray over (latitude[, longitude]) from a DataArray or a numpy array.

    A 1-D array is taken to be over latitude, a 2-D one over (latitude, longitude).
    """
    if isinstance(values, xr.DataArray):
        return values
    values = np.asarray(values)
    if values.ndim not in (1, 2):
        raise ValueError(f"{name}: expected a 1-D (latitude) or 2-D (latitude, longitude) array, "
                         f"got shape {values.shape}")
    return xr.DataArray(values, dims=SPATIAL_DIMS[: values.ndim])


def spatial_mean(
    x: xr.DataArray,
    weights_lat: np.ndarray | xr.DataArray,
    mask: np.ndarray | xr.DataArray | None = None,
    dims: tuple[str, ...] = SPATIAL_DIMS,
    skipna: bool = False,
) -> xr.DataArray:
    """Area-weighted mean over (latitude, longitude), optionally over a region only.

        mean = sum_{i,j} w_i m_ij x_ij / sum_{i,j} w_i m_ij

    with w the latitude (cell-area) weights (`grid.latitude_weights`, mean 1 as WB2's
    `get_lat_weights`; any positive scale gives the same mean) and m the region mask (all ones
    without one). `mask` is boolean over latitude (as `region_masks` returns) or over
    (latitude, longitude); numpy arrays or DataArrays. Points outside the region never enter, even
    where x is NaN there. Inside it NaN propagates unless `skipna`, in which case the weights are
    renormalised over the valid points (xarray `weighted(...).mean`). Accumulates in float64.
    """
    w = as_spatial(weights_lat, "weights_lat").astype(np.float64)
    if mask is not None:
        m = as_spatial(mask, "mask")
        if m.dtype != bool:
            raise TypeError(f"mask: expected booleans, got {m.dtype}")
        w = w * m
        x = x.where(m, 0.0)
    if not float(w.sum()) > 0:
        raise ValueError("spatial_mean: the region holds no grid points (all weights zero)")
    return x.astype(np.float64).weighted(w).mean(dims, skipna=skipna)


def region_weights(lat: np.ndarray, regions: Sequence[str]) -> xr.DataArray:
    """W (region, latitude): latitude weights x region mask, each row summing to 1 over all latitudes."""
    w = grid.latitude_weights(np.asarray(lat, dtype=np.float64))
    masks = region_masks(lat)
    rows = []
    for r in regions:
        if r not in masks:
            raise ValueError(f"unknown region {r!r}; known: {list(masks)}")
        wr = w * masks[r]
        if not wr.sum() > 0:
            raise ValueError(f"region {r!r} holds no latitude of the grid")
        rows.append(wr / wr.sum())
    return xr.DataArray(np.array(rows), dims=("region", "latitude"), coords={"region": list(regions), "latitude": lat})


def regional(x: xr.DataArray, w: xr.DataArray) -> xr.DataArray:
    """Share of these latitude rows in each regional mean: sum_lat W[r, lat] mean_lon x; NaN propagates."""
    return xr.dot(x.astype(np.float64).mean("longitude"), w, dim="latitude")
