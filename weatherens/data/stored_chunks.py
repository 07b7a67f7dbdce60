"""Where a store's chunks lie after `era5.open` has sorted and selected it.

`tag` adds, before any reordering, one integer coordinate per variable and chunked dim holding each
index's stored chunk number (index // chunk length, from the variable's zarr chunks); the coordinates
follow every sort and selection, so `runs` can tell afterwards which consecutive canonical indices
share a stored chunk. `chunk_like_store` lays dask chunks on those runs, so that each stored chunk is
read once: a dask chunk that cut a stored chunk would make zarr read and decompress it once per dask
chunk that touches it. Variables of one store may be chunked differently (WB2 and xarray's default
chunks are per variable), hence one tag per variable.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

PREFIX = "stored_chunk:"


def _name(variable, dim) -> str:
    return f"{PREFIX}{variable}:{dim}"


def tag(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with a coordinate PREFIX + 'variable:dim' = (index // chunk length) along each dim of each
    data variable whose zarr chunks are known (`encoding['chunks']`, in the variable's dim order:
    call before any transpose)."""
    tags = {}
    for v in ds.data_vars:
        chunks = ds[v].encoding.get("chunks")
        if not isinstance(chunks, tuple) or len(chunks) != ds[v].ndim:
            continue
        for dim, size in zip(ds[v].dims, chunks):
            tags[_name(v, dim)] = (dim, np.arange(ds.sizes[dim]) // max(1, int(size)))
    return ds.assign_coords(tags)


def runs(ds: xr.Dataset, variable: str, dim: str) -> tuple[int, ...] | None:
    """Lengths of the runs of consecutive `dim` indices of `variable` that lie in one stored chunk, in
    order (they sum to the dim's size); None where `ds` carries no tag for them. A chunk split by a
    sort (e.g. longitudes rotated from -180..180 to 0..360) shows as two runs."""
    name = _name(variable, dim)
    if name not in ds.coords:
        return None
    return run_lengths(np.asarray(ds[name].values))


def run_lengths(ids: np.ndarray) -> tuple[int, ...]:
    """Lengths of the runs of equal consecutive values in ids (1-D), in order."""
    if ids.size == 0:
        return ()
    edges = np.flatnonzero(np.diff(ids) != 0) + 1
    return tuple(int(n) for n in np.diff(np.concatenate([[0], edges, [ids.size]])))


def strip(ds: xr.Dataset) -> xr.Dataset:
    """`ds` without the tag coordinates."""
    return ds.drop_vars([c for c in ds.coords if str(c).startswith(PREFIX)])


def chunk_like_store(ds: xr.Dataset, fallback: Mapping[str, int]) -> xr.Dataset:
    """`ds` dask-chunked variable by variable, without its tags: along each dim of `fallback`, the
    variable's stored runs where it is tagged (a whole dim where fallback says -1, since merging whole
    stored chunks still reads each once), `fallback`'s entry elsewhere."""
    chunked = {}
    for v in ds.data_vars:
        chunks: dict[str, int | tuple[int, ...]] = {}
        for dim, default in fallback.items():
            if dim in ds[v].dims:
                stored = runs(ds, str(v), dim)
                chunks[dim] = stored if stored is not None and default != -1 else default
        chunked[v] = ds[v].chunk(chunks)
    return strip(xr.Dataset(chunked, attrs=ds.attrs))
