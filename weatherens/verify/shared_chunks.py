"""A dask-backed DataArray's chunks as reads that many block tasks share, so each chunk is read once.

Passing dask-backed slices to `dask.delayed` tasks lowers each slice's graph on its own, with its own
key names: two tasks that slice one stored chunk then read it twice. `SharedChunks` turns the array
into one `Delayed` per dask chunk (`dask.array.Array.to_delayed`, one graph) and builds each block
from the chunks it touches, inside the block's task. With dask chunks laid on the store's chunks
(`io.open_forecast`), every stored chunk is then read once per variable, whatever the blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed


def _assemble(nested: list, local: list[np.ndarray], dims: tuple[str, ...], coords: dict, name, attrs) -> xr.DataArray:
    """The block from the numpy chunks it touches (`nested`, one list level per dim) and, per dim, the
    block's indices into their concatenation."""
    region = np.block(nested) if isinstance(nested, list) else nested
    if any(idx.size != n or (idx.size and (idx[0] != 0 or np.any(np.diff(idx) != 1)))
           for idx, n in zip(local, region.shape)):
        region = region[np.ix_(*local)]
    return xr.DataArray(region, dims=dims, coords=coords, name=name, attrs=attrs)


class SharedChunks:
    """x's chunks as shared `Delayed` reads; `take` makes the delayed blocks.

    A numpy-backed x is one chunk (nothing to read)."""

    def __init__(self, x: xr.DataArray):
        data = x.data if isinstance(x.data, da.Array) else da.from_array(np.asarray(x.values), chunks=-1)
        self.dims = tuple(str(d) for d in x.dims)
        self.sizes = dict(zip(self.dims, data.shape))
        self.coords = {str(d): x[d].values for d in x.dims if d in x.coords}
        self.name, self.attrs = x.name, dict(x.attrs)
        self.parts = data.to_delayed()
        self.bounds = [np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in data.chunks]

    def take(self, index: Mapping[str, Sequence[int] | np.ndarray]) -> Delayed:
        """Delayed DataArray x.isel(index) (index: dim -> increasing integer positions; other dims whole),
        with x's coordinates along its dims. Reads only the chunks that hold the positions."""
        parts = self.parts
        local, coords = [], {}
        for axis, dim in enumerate(self.dims):
            pos = np.asarray(index[dim], dtype=np.int64) if dim in index else np.arange(self.sizes[dim])
            bounds = self.bounds[axis]
            chunk = np.searchsorted(bounds, pos, side="right") - 1
            used = np.unique(chunk)
            offset = np.concatenate([[0], np.cumsum(np.diff(bounds)[used])[:-1]])
            local.append(offset[np.searchsorted(used, chunk)] + pos - bounds[chunk])
            parts = np.take(parts, used, axis=axis)
            if dim in self.coords:
                coords[dim] = self.coords[dim][pos]
        nested = parts.tolist() if parts.size > 1 else parts.reshape(-1)[0]
        return dask.delayed(_assemble, pure=True)(nested, local, self.dims, coords, self.name, self.attrs)
