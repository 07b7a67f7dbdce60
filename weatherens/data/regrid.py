"""First-order conservative regridding of canonical datasets to a coarser regular grid.

Each target cell's value is the area-weighted mean of the source cells it overlaps
(Jones, P. W., 1999: "First- and second-order conservative remapping schemes for grids in
spherical coordinates", Mon. Wea. Rev., 127, 2204-2210, first-order scheme). For regular
latitude/longitude grids the overlap area of two cells factorises: the latitude part is
measured in sin(latitude) (the band between phi_a and phi_b has area 2 pi r^2 (sin phi_b -
sin phi_a)), the longitude part in degrees, periodic in 360. So the remap is two dense
matrices, W_lat (nlat_out, nlat_in) and W_lon (nlon_out, nlon_in), with rows summing to 1:

    out[..., i, k] = sum_j sum_l W_lat[i, j] x[..., j, l] W_lon[k, l]

Cell edges are `weatherens.grid.latitude_bounds` / `longitude_bounds` (midpoints, closed by
+-90), as WeatherBench 2's `regridding.py`, so the area-weighted global mean computed with
`grid.latitude_weights` is preserved exactly (to rounding). The same weights are built by
`dinosaur.horizontal_interpolation.conservative_{latitude,longitude}_weights` (in radians).

Inputs follow the canonical form of docs/architecture.md: latitude ascending (-90 -> 90), longitude
regular and global (0 -> 360); the pole rows of an ERA5 grid (181 x 360, 721 x 1440) are cells
of half height, which the edges above handle.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

import numpy as np
import xarray as xr

from weatherens import grid

LAT, LON = "latitude", "longitude"
_EDGE_TOL_DEG = 1e-9  # overlaps thinner than this are rounding slivers of coincident edges
_XarrayT = TypeVar("_XarrayT", xr.Dataset, xr.DataArray)


def _check_ascending(values: np.ndarray, name: str, what: str) -> None:
    if values.ndim != 1 or values.size < 1:
        raise ValueError(f"{what} {name} must be a non-empty 1-D coordinate, got shape {values.shape}")
    if values.size > 1 and not np.all(np.diff(values) > 0):
        raise ValueError(
            f"{what} {name} must be strictly ascending (canonical form: latitude -90 -> 90, "
            f"longitude 0 -> 360); got {values[0]:g} ... {values[-1]:g}"
        )


def conservative_latitude_weights(src_lat: np.ndarray, dst_lat: np.ndarray) -> np.ndarray:
    """Conservative remap matrix along latitude, shape (nlat_out, nlat_in), rows sum to 1.

    W[i, j] = (sin(min(b_i+, a_j+)) - sin(max(b_i-, a_j-)))^+ / (sin b_i+ - sin b_i-), with a, b the
    source and target cell edges in degrees (`grid.latitude_bounds`).
    """
    src_lat = np.asarray(src_lat, dtype=np.float64)
    dst_lat = np.asarray(dst_lat, dtype=np.float64)
    _check_ascending(src_lat, LAT, "source")
    _check_ascending(dst_lat, LAT, "target")
    a, b = grid.latitude_bounds(src_lat), grid.latitude_bounds(dst_lat)
    upper = np.minimum(b[1:, None], a[None, 1:])
    lower = np.maximum(b[:-1, None], a[None, :-1])
    overlap = np.where(
        upper - lower > _EDGE_TOL_DEG, np.sin(np.deg2rad(upper)) - np.sin(np.deg2rad(lower)), 0.0
    )
    return overlap / overlap.sum(axis=1, keepdims=True)


def conservative_longitude_weights(src_lon: np.ndarray, dst_lon: np.ndarray) -> np.ndarray:
    """Conservative remap matrix along longitude, shape (nlon_out, nlon_in), rows sum to 1.

    Both axes must be regular and global (cells of 360/n degrees); overlaps are lengths in degrees
    with periodic wrap (a cell straddling 0/360 overlaps cells at both ends).
    """
    src_lon = np.asarray(src_lon, dtype=np.float64)
    dst_lon = np.asarray(dst_lon, dtype=np.float64)
    for values, what in ((src_lon, "source"), (dst_lon, "target")):
        _check_ascending(values, LON, what)
        step = 360.0 / values.size
        if values.size > 1 and not np.allclose(np.diff(values), step, rtol=0, atol=1e-6 * step):
            raise ValueError(
                f"{what} longitude must be regular and global (step 360/{values.size} = {step:g}); "
                f"got steps {np.diff(values).min():g} .. {np.diff(values).max():g}"
            )
    a, b = grid.longitude_bounds(src_lon), grid.longitude_bounds(dst_lon)
    overlap = np.zeros((dst_lon.size, src_lon.size))
    for shift in (-360.0, 0.0, 360.0):  # cells are shorter than 360, so one wrap each way suffices
        upper = np.minimum(b[1:, None], a[None, 1:] + shift)
        lower = np.maximum(b[:-1, None], a[None, :-1] + shift)
        width = upper - lower
        overlap += np.where(width > _EDGE_TOL_DEG, width, 0.0)
    return overlap / overlap.sum(axis=1, keepdims=True)


def conservative_weights(src: np.ndarray, dst: np.ndarray, dim: str) -> np.ndarray:
    """Remap matrix (n_out, n_in) with rows summing to 1 for `dim` 'latitude' or 'longitude'."""
    if dim == LAT:
        return conservative_latitude_weights(src, dst)
    if dim == LON:
        return conservative_longitude_weights(src, dst)
    raise ValueError(f"dim must be {LAT!r} or {LON!r}, got {dim!r}")


def _apply(x: np.ndarray, w_lat: np.ndarray, w_lon: np.ndarray, skipna: bool) -> np.ndarray:
    """Remap the last two axes (lat, lon) of x; float64 arithmetic, result in x's float dtype."""
    out_dtype = np.result_type(x.dtype, np.float32)
    x64 = np.asarray(x, dtype=np.float64)
    missing = np.isnan(x64)

    def remap(values: np.ndarray) -> np.ndarray:
        return w_lat @ (values @ w_lon.T)  # (..., nlat, nlon) -> (..., nlat_out, nlon_out)

    if not missing.any():
        return remap(x64).astype(out_dtype, copy=False)
    total = remap(np.where(missing, 0.0, x64))
    if skipna:
        valid = remap((~missing).astype(np.float64))  # weight of the valid cells, 0..1
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(valid > 0, total / np.where(valid > 0, valid, 1.0), np.nan)
    else:
        touched = remap(missing.astype(np.float64)) > 0  # any NaN cell with positive weight
        out = np.where(touched, np.nan, total)
    return out.astype(out_dtype, copy=False)


def _regrid_array(
    da: xr.DataArray, w_lat: np.ndarray, w_lon: np.ndarray, lat_out: xr.DataArray, lon_out: xr.DataArray,
    skipna: bool, note: str,
) -> xr.DataArray:
    if da.chunks is not None and (len(da.chunksizes[LAT]) > 1 or len(da.chunksizes[LON]) > 1):
        da = da.chunk({LAT: -1, LON: -1})  # the remap needs whole horizontal fields per chunk
    dtype = np.result_type(da.dtype, np.float32)
    out = xr.apply_ufunc(
        _apply,
        da,
        kwargs={"w_lat": w_lat, "w_lon": w_lon, "skipna": skipna},
        input_core_dims=[[LAT, LON]],
        output_core_dims=[[LAT, LON]],
        exclude_dims={LAT, LON},
        dask="parallelized",
        output_dtypes=[dtype],
        dask_gufunc_kwargs={"output_sizes": {LAT: lat_out.size, LON: lon_out.size}},
        keep_attrs=True,
    )
    out = out.drop_vars([c for c in out.coords if LAT in out[c].dims or LON in out[c].dims])
    out = out.assign_coords({LAT: lat_out, LON: lon_out}).transpose(*da.dims)
    out.attrs["regrid"] = note
    return out


def conservative(
    obj: _XarrayT,
    lat_out: np.ndarray,
    lon_out: np.ndarray,
    skipna: bool = False,
) -> _XarrayT:
    """Conservatively regrid every variable with (latitude, longitude) dims to a coarser grid.

    Args:
      obj: canonical Dataset or DataArray (latitude ascending, longitude regular and global),
        numpy- or dask-backed. Dask input stays lazy (latitude/longitude are rechunked to one
        chunk each if split); variables without both horizontal dims pass through unchanged.
      lat_out, lon_out: target cell centres in degrees, shapes (nlat_out,), (nlon_out,), no finer
        than the source (nlat_out <= nlat_in, nlon_out <= nlon_in).
      skipna: False: a target cell is NaN when any overlapping source cell is NaN. True: NaN
        source cells are left out and the mean is renormalised by the area of the valid ones
        (NaN only where all overlapping cells are NaN).

    Returns:
      The same kind of object on the new grid, dims in the input order, dtype float32 for
      float32 input (float64 arithmetic inside), attrs kept plus a `regrid` note.
    """
    for dim in (LAT, LON):
        if dim not in obj.dims:
            raise ValueError(f"regrid: input has no {dim!r} dimension (dims: {tuple(obj.dims)})")
    lat_in = np.asarray(obj[LAT].values, dtype=np.float64)
    lon_in = np.asarray(obj[LON].values, dtype=np.float64)
    lat_out = np.asarray(lat_out, dtype=np.float64)
    lon_out = np.asarray(lon_out, dtype=np.float64)
    if lat_out.size > lat_in.size or lon_out.size > lon_in.size:
        raise ValueError(
            f"regrid: target {lat_out.size} x {lon_out.size} (lat x lon) is finer than the source "
            f"{lat_in.size} x {lon_in.size}; conservative regridding here only coarsens"
        )
    w_lat = conservative_latitude_weights(lat_in, lat_out)
    w_lon = conservative_longitude_weights(lon_in, lon_out)
    note = (
        f"first-order conservative (Jones 1999) from {lat_in.size} x {lon_in.size} to "
        f"{lat_out.size} x {lon_out.size} (lat x lon), skipna={skipna}"
    )
    lat_coord = xr.DataArray(lat_out, dims=LAT, attrs=dict(obj[LAT].attrs))
    lon_coord = xr.DataArray(lon_out, dims=LON, attrs=dict(obj[LON].attrs))

    def one(da: xr.DataArray) -> xr.DataArray:
        return _regrid_array(da, w_lat, w_lon, lat_coord, lon_coord, skipna, note)

    if isinstance(obj, xr.DataArray):
        return one(obj)
    out_vars = {}
    for name, da in obj.data_vars.items():
        has = (LAT in da.dims, LON in da.dims)
        if all(has):
            out_vars[name] = one(da)
        elif any(has):
            raise ValueError(f"regrid: {name} has only one of latitude/longitude (dims {da.dims})")
        else:
            out_vars[name] = da
    new: dict[Hashable, xr.DataArray] = {LAT: lat_coord, LON: lon_coord}
    coords = {  # input order kept; coordinates on the old horizontal grid other than lat/lon dropped
        k: new.get(k, v) for k, v in obj.coords.items() if k in new or not {LAT, LON} & set(v.dims)
    }
    out = xr.Dataset(out_vars, coords=coords, attrs=dict(obj.attrs))
    out.attrs["regrid"] = note
    return out


def to_equiangular(obj: _XarrayT, nlat: int = 32, nlon: int = 64, skipna: bool = False) -> _XarrayT:
    """Regrid to WeatherBench 2's equiangular grid without poles (default 64 x 32, 5.625 deg)."""
    return conservative(obj, grid.equiangular_latitudes(nlat), grid.longitudes(nlon), skipna=skipna)
