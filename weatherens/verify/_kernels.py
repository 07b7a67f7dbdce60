"""Reductions over the member dim in cache-sized blocks (the engine behind `metrics`).

`apply_members(name, kernel, forecast, member_dim, *pointwise)` runs `kernel(block, scratch, *columns)`
over every point, where `block` is a writable, C-ordered (n, M) copy of n points' members in
float32 or float64 (the input's, else float64), `scratch` a C-ordered float64 (n, M) work array
(contents undefined), and each column the (n,) values of a pointwise argument (truth, threshold, ...)
at those points; the kernel returns (n,) values. `block` and `scratch` live in two buffers allocated
once per call and reused for every block: allocating per block cost up to a third of the run time in
page faults (glibc hands large freed blocks back to the OS).

Layout. WeatherBench 2 stores members in the middle (time, lead, number, level, lat, lon), so the
members of one point are far apart in memory. The point axes are first put in memory order and
merged where their strides allow (typically into (time x lead, level x lat x lon)); a block is then a
run of consecutive points, gathered member-tile by member-tile (a tiled transpose, several times
faster than one strided copy). Extra memory: the two buffers, max(BLOCK, MIN_POINTS x M) elements
each (0.75 MiB up to M = 256, then 3 KiB per member), plus the (n,) columns and the output.
"""

from __future__ import annotations

import functools

import numpy as np
import xarray as xr
from numpy.lib.stride_tricks import as_strided

BLOCK = 1 << 16  # elements (points x members) per block: 256 KiB float32 + 512 KiB float64, in L2 cache
MIN_POINTS = 256  # ... but at least this many points (for large M: long runs to gather, fewer calls)
TILE = 16  # members per gather step when the member axis is strided


def _blocks(shape: tuple[int, ...], row: int, budget: int):
    """Index tuples tiling `shape` (+ a trailing axis of `row` elements) in blocks of at most `budget` elements
    (or one point's row where that is larger)."""
    if not shape:
        yield ()
        return
    inner = row * int(np.prod(shape[1:], dtype=np.int64))
    if inner <= budget or len(shape) == 1:
        step = max(1, budget // max(inner, 1))
        for start in range(0, shape[0], step):
            yield (slice(start, start + step),)
        return
    for i in range(shape[0]):
        for rest in _blocks(shape[1:], row, budget):
            yield (i,) + rest


def _merged(shape, strides):
    """Drop size-1 axes and merge neighbours whose strides nest, for axes already in memory order."""
    merged_shape, merged_strides = [], []
    for n, s in zip(shape, strides):
        if n == 1:
            continue
        if merged_shape and merged_strides[-1] == n * s:
            merged_shape[-1] *= n
            merged_strides[-1] = s
        else:
            merged_shape.append(n)
            merged_strides.append(s)
    return tuple(merged_shape), tuple(merged_strides)


def _gather(dst, src):
    """dst[...] = src for (..., M) arrays; in member tiles when src's member axis is strided."""
    m = src.shape[-1]
    if src.strides[-1] == src.itemsize or m <= TILE:
        dst[...] = src
    elif src.ndim > 2:
        for i in range(src.shape[0]):
            _gather(dst[i], src[i])
    else:
        for start in range(0, m, TILE):
            dst[:, start : start + TILE] = src[:, start : start + TILE]


def over_members(x, *pointwise, kernel, out_dtype=np.float64):
    """kernel over blocks of points of x (..., M), pointwise arrays broadcast against x's leading shape."""
    m = x.shape[-1]
    lead = np.broadcast_shapes(x.shape[:-1], *(np.shape(p) for p in pointwise))
    x = np.broadcast_to(x, lead + (m,))
    # memory order: broadcast (stride-0) axes outermost, then by decreasing stride
    perm = sorted(range(len(lead)), key=lambda a: (x.strides[a] != 0, -abs(x.strides[a])))
    shape, strides = _merged([lead[a] for a in perm], [x.strides[a] for a in perm])
    if not shape:  # a single point
        shape, strides = (1,), (0,)
    xm = as_strided(x, shape + (m,), strides + (x.strides[-1],), writeable=False)
    columns = [np.broadcast_to(p, lead).transpose(perm).reshape(shape) for p in pointwise]
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    out = np.empty(shape, out_dtype)
    budget = max(BLOCK, MIN_POINTS * m)
    size = min(budget, int(np.prod(shape, dtype=np.int64)) * m)
    buffers = np.empty(size, work), np.empty(size, np.float64)
    for idx in _blocks(shape, m, budget):
        src = xm[idx]
        block, scratch = (b[: src.size] for b in buffers)
        _gather(block.reshape(src.shape), src)
        result = kernel(block.reshape(-1, m), scratch.reshape(-1, m), *(np.ravel(c[idx]) for c in columns))
        out[idx] = result.reshape(out[idx].shape)
    return out.reshape([lead[a] for a in perm]).transpose(np.argsort(perm))


def apply_members(name, kernel, forecast: xr.DataArray, member_dim: str, *pointwise, out_dtype=np.float64,
                  min_members=1) -> xr.DataArray:
    """`over_members` through xr.apply_ufunc (lazy and chunk by chunk for dask), after checking the member dim.

    A forecast chunked along the member dim is rechunked to one member chunk.
    """
    if member_dim not in forecast.dims:
        raise ValueError(f"{name}: forecast has no member dim {member_dim!r} (dims: {forecast.dims})")
    for p in pointwise:
        if isinstance(p, xr.DataArray) and member_dim in p.dims:
            raise ValueError(f"{name}: {p.name or 'truth'} must not have the member dim {member_dim!r}")
    m = forecast.sizes[member_dim]
    if m < min_members:
        why = " (undefined for one member)" if m == 1 else ""
        raise ValueError(f"{name}: needs at least {min_members} members, got {m}{why}")
    if forecast.chunks is not None and len(forecast.chunksizes[member_dim]) > 1:
        forecast = forecast.chunk({member_dim: -1})
    return xr.apply_ufunc(
        functools.partial(over_members, kernel=kernel, out_dtype=out_dtype),
        forecast, *pointwise,
        input_core_dims=[[member_dim]] + [[]] * len(pointwise),
        dask="parallelized",
        output_dtypes=[out_dtype],
    )
