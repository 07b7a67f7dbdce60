"""Block planning for `evaluation`: which dask task scores which part of a forecast.

Leads are scored in groups of up to MAX_LEADS_PER_BLOCK (as many as fit one block, `leads_per_block`,
and the same init times: `lead_groups`), and a group is cut into blocks of init times x latitude rows
(all members and levels together, `pointwise_block_shape`) whose working set stays under
BLOCK_BYTES. Blocks are cut between the forecast's stored chunks where they can be
(`partial_scores.aligned_blocks` on the dask chunks that `io.open_forecast` laid on them) and build
their inputs from one shared read per chunk (`shared_chunks`), so each stored chunk is read once.
Spectra come with the pointwise blocks when those hold all latitude rows, and from blocks of init
times x members (`spectrum_block_shape`) otherwise (`group_tasks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import dask
import numpy as np
import xarray as xr
from dask.delayed import Delayed

from weatherens.data import stored_chunks
from weatherens.verify import io, partial_scores
from weatherens.verify.shared_chunks import SharedChunks

BLOCK_BYTES = 128 * 2**20  # working memory per dask task (one block of init times x latitude rows or members)


def pointwise_row_bytes(f: xr.DataArray) -> int:
    """Working memory of one latitude row of a pointwise block (all its init-independent dims): per
    point, the members in the input precision plus ~20 float64 temporaries (the metrics)."""
    return (f.sizes["longitude"] * f.sizes.get("level", 1) * f.sizes.get(io.LEAD, 1)
            * (f.sizes[io.MEMBER] * f.dtype.itemsize + 20 * 8))


def pointwise_block_shape(f: xr.DataArray) -> tuple[int, int]:
    """(init times, latitude rows) per pointwise block, so a block's working set fits BLOCK_BYTES."""
    row = pointwise_row_bytes(f)
    nlat = f.sizes["latitude"]
    if nlat * row <= BLOCK_BYTES:
        return max(1, BLOCK_BYTES // (nlat * row)), nlat
    return 1, max(1, BLOCK_BYTES // row)


def spectrum_block_shape(x: xr.DataArray) -> tuple[int, int]:
    """(init times, members) per spectrum block: a float64 copy and its transforms per field."""
    field = x.sizes.get("level", 1) * x.sizes.get(io.LEAD, 1) * x.sizes["latitude"] * x.sizes["longitude"] * 32
    members = x.sizes.get(io.MEMBER, 1)
    if members * field <= BLOCK_BYTES:
        return max(1, BLOCK_BYTES // (members * field)), members
    return 1, max(1, BLOCK_BYTES // field)


MAX_LEADS_PER_BLOCK = 8  # leads scored together by one task (fewer, larger tasks; still several per variable)


def leads_per_block(f_all: xr.DataArray) -> int:
    """How many leads one block holds: all init times and latitude rows of that many leads within
    BLOCK_BYTES, at most MAX_LEADS_PER_BLOCK; 1 when even one lead needs several blocks (then
    `pointwise_block_shape` cuts it)."""
    one_lead = f_all.sizes["time"] * f_all.sizes["latitude"] * pointwise_row_bytes(f_all.isel({io.LEAD: 0}))
    return int(max(1, min(MAX_LEADS_PER_BLOCK, BLOCK_BYTES // one_lead)))


def dim_chunks(x: xr.DataArray, dim: str) -> tuple[int, ...]:
    """The dask chunks of x along dim (the store's chunks, `io.open_forecast`), or one unit per index
    for numpy-backed data (no stored chunks to respect)."""
    if x.chunks is not None:
        return tuple(int(n) for n in x.chunksizes[dim])
    return (1,) * x.sizes[dim]


def lead_groups(scored: list[tuple[int, np.ndarray]], size: int, lead_chunk: np.ndarray) -> list[list]:
    """The (lead index, inits-with-truth mask) entries grouped by mask, in lead order, at most `size`
    per group (a group's leads score the same init times), cut between stored lead chunks
    (`lead_chunk`: each lead's chunk number) where a group must be cut."""
    by_mask: dict[bytes, list] = {}
    for entry in scored:
        by_mask.setdefault(entry[1].tobytes(), []).append(entry)
    groups = []
    for same in by_mask.values():
        runs = stored_chunks.run_lengths(lead_chunk[[i for i, _ in same]])
        groups += [same[a:b] for a, b in partial_scores.aligned_blocks(runs, size)]
    return groups


def _rows(x, lat: tuple[int, int]):
    return x.isel(latitude=slice(*lat)) if isinstance(x, xr.DataArray) and "latitude" in x.dims else x


def _inits(x, time: tuple[int, int]):
    return x.isel(time=slice(*time)) if isinstance(x, xr.DataArray) and "time" in x.dims else x


def chunk_of(x: xr.DataArray, dim: str) -> np.ndarray:
    """Each index's dask chunk number along dim (`dim_chunks`)."""
    sizes = dim_chunks(x, dim)
    return np.repeat(np.arange(len(sizes)), sizes)


def group_tasks(group_index: int, src_f: SharedChunks, src_t: SharedChunks, f_all: xr.DataArray, ipos: np.ndarray,
                idx: list[int], t_pos: np.ndarray, clim, thresholds, w, seed: int, parts: frozenset[str],
                with_spectra: bool) -> list[tuple[tuple, Delayed]]:
    """(tag, dask.delayed) pairs for one group of leads (positions `idx`) scored at the init positions
    `ipos`, whose valid times are the truth's positions t_pos (init, lead): pointwise blocks of init
    times x latitude rows, cut between the forecast's stored chunks where they can be, built from
    the shared chunk reads of `src_f` and `src_t` (each chunk read once). Spectra come with the
    pointwise blocks when a block holds whole fields; otherwise from spectrum blocks of init times x
    members (which read the forecast's chunks again). The ranks' tie-breaking draws are keyed on the
    points' coordinates, lead included (`metrics.ranks`), so they do not depend on the blocks."""
    tasks: list[tuple[tuple, Delayed]] = []
    n_lat = f_all.sizes["latitude"]
    per_time, per_lat = pointwise_block_shape(f_all.isel({io.LEAD: idx}))
    time_blocks = partial_scores.aligned_blocks(stored_chunks.run_lengths(chunk_of(f_all, "time")[ipos]), per_time)
    lat_blocks = partial_scores.aligned_blocks(dim_chunks(f_all, "latitude"), per_lat)
    whole_fields = with_spectra and lat_blocks == [(0, n_lat)]
    rank_seed = int(np.random.SeedSequence([seed]).generate_state(1, np.uint64)[0])
    score_block = dask.delayed(partial_scores.block_parts, pure=True)

    def truth(time, lat=None):
        used, t_map = np.unique(t_pos[slice(*time)], return_inverse=True)
        index = {"time": used} if lat is None else {"time": used, "latitude": np.arange(*lat)}
        return src_t.take(index), t_map.reshape(-1, len(idx))

    for ti, time in enumerate(time_blocks):
        for lat in lat_blocks:
            f = src_f.take({"time": ipos[slice(*time)], io.LEAD: idx, "latitude": np.arange(*lat)})
            thr = {k: _rows(v, lat) for k, v in thresholds.items()}
            task = score_block(f, *truth(time, lat), _rows(_inits(clim, time), lat), thr,
                               w.isel(latitude=slice(*lat)), rank_seed, parts, BLOCK_BYTES if whole_fields else None)
            tasks.append(((group_index, "pointwise", ti), task))
    if with_spectra and not whole_fields:
        members = f_all.sizes[io.MEMBER]
        one_init = f_all.isel({io.LEAD: idx, "time": [0]})
        per_time, per_member = spectrum_block_shape(one_init)
        inits, leads = f_all["time"].values, f_all[io.LEAD].values[idx]
        for time in partial_scores.block_starts(len(ipos), per_time):
            block: dict[str, Sequence[int] | np.ndarray] = {"time": ipos[slice(*time)], io.LEAD: idx}
            tasks.append(((group_index, "truth"), dask.delayed(partial_scores.truth_spectrum_sums, pure=True)(
                *truth(time), inits[ipos[slice(*time)]], leads, BLOCK_BYTES)))
            tasks.append(((group_index, "ensemble_mean"), dask.delayed(
                partial_scores.ensemble_mean_spectrum_sums, pure=True)(src_f.take(block), BLOCK_BYTES)))
            for mem in partial_scores.block_starts(members, per_member):
                part = src_f.take({**block, io.MEMBER: np.arange(*mem)})
                tasks.append(((group_index, "members"), dask.delayed(
                    partial_scores.spectrum_sums_in_pieces, pure=True)(part, BLOCK_BYTES)))
    return tasks
