"""The training sampler: the only bridge from xarray to arrays.

A sample at initialisation time t is the window
  inputs   x(t - dt), x(t)                      (2, C, lat, lon)
  forcings f(t - dt), f(t), ..., f(t + k dt)    (k + 2, F, lat, lon)
  targets  x(t + dt), ..., x(t + k dt)          (k, C, lat, lon)
in physical units (normalisation is the model's job), float32, channels in a fixed order
(`channels`: each variable in config order, its levels ascending as configured).

Windows never cross the split's time range. The order is a permutation per epoch drawn from
(seed, epoch), the same in every process; process p of P takes slice p of each global batch,
so that P processes with per-process batch B see exactly what one process with batch P*B sees.
The batch for a step is a pure function of the step number, so training resumes exactly.

A split small enough (`in_memory_max_gib`) is read into RAM once; a larger one is read per
batch straight from the lazily indexed store (one orthogonal read per variable, no dask).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import xarray as xr

from weatherens.config import DataConfig
from weatherens.data import era5, forcings, names


@dataclasses.dataclass(frozen=True)
class Batch:
    """One batch. Shapes: B samples, C channels, F forcings, k rollout steps."""

    inputs: np.ndarray  # (B, 2, C, lat, lon) float32: states at t - dt and t
    forcings: np.ndarray  # (B, k + 2, F, lat, lon) float32: at t - dt ... t + k dt
    targets: np.ndarray  # (B, k, C, lat, lon) float32: states at t + dt ... t + k dt
    times: np.ndarray  # (B,) datetime64[ns]: the initialisation times t


def channel_names(ds: xr.Dataset, variables: tuple[str, ...]) -> tuple[str, ...]:
    """Channel order for the given (long-name) variables of a canonical dataset."""
    out = []
    for v in variables:
        if "level" in ds[v].dims:
            out += [names.channel_name(v, lev) for lev in ds["level"].values]
        else:
            out.append(v)
    return tuple(out)


def static_fields(ds: xr.Dataset, variables: tuple[str, ...]) -> np.ndarray:
    """Time-invariant fields (orography, land-sea mask, ...) as float32 (S, lat, lon).

    A field stored with a time axis (as in some WeatherBench 2 stores) must be constant in time;
    its first time is used.
    """
    store = ds.attrs.get("source", "<dataset>")
    out = []
    for v in (names.long_name(n) for n in variables):
        if v not in ds:
            raise era5.DataError(f"{store}: static field '{v}' not in store (has {sorted(map(str, ds.data_vars))})")
        da = ds[v].isel(time=0) if "time" in ds[v].dims else ds[v]
        if set(da.dims) != {"latitude", "longitude"}:
            raise era5.DataError(f"{store}: static field '{v}' has dims {da.dims}; expected (latitude, longitude)")
        field = np.asarray(da.transpose("latitude", "longitude").values, np.float32)
        if not np.isfinite(field).all():
            raise era5.DataError(f"{store}: static field '{v}' has non-finite values")
        out.append(field)
    return np.stack(out) if out else np.zeros((0, ds.sizes["latitude"], ds.sizes["longitude"]), np.float32)


def _as_channels(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack per-variable arrays (n, [L,] lat, lon) into (n, C, lat, lon) float32."""
    parts = [a if a.ndim == 4 else a[:, None] for a in arrays]
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def read_states(ds: xr.Dataset, variables: Sequence[str], times) -> np.ndarray:
    """States (T, C, lat, lon) float32 at the given times, channels in `channel_names` order.

    Raises DataError naming the store when a time is missing or a value is not finite."""
    store = ds.attrs.get("source", "<dataset>")
    times = np.asarray(times, "datetime64[ns]")
    missing = times[~np.isin(times, ds["time"].values)]
    if missing.size:
        raise era5.DataError(f"{store}: no data at {[str(np.datetime64(t, 's')) for t in missing[:5]]} "
                             f"(store covers {np.datetime64(ds['time'].values[0], 's')} .. "
                             f"{np.datetime64(ds['time'].values[-1], 's')})")
    sub = ds.sel(time=times)
    block = _as_channels([np.asarray(sub[v].values) for v in variables])
    if not np.isfinite(block).all():
        raise era5.DataError(f"{store}: non-finite values in the states at {[str(np.datetime64(t, 's')) for t in times]}")
    return block


class _Source:
    """Reads states (n, C, lat, lon) at given time indices of the split."""

    def __init__(self, ds: xr.Dataset, variables: tuple[str, ...], in_memory: bool):
        self.ds = ds
        self.variables = variables
        self.channels = channel_names(ds, variables)
        self.in_memory = in_memory
        self._ram = None
        if in_memory:
            self._ram = _as_channels([np.asarray(ds[v].values) for v in variables])
            self._check_finite(self._ram, np.arange(self._ram.shape[0]))

    def read(self, tidx: np.ndarray) -> np.ndarray:
        if self._ram is not None:
            return self._ram[tidx]
        uniq, inverse = np.unique(tidx, return_inverse=True)
        block = _as_channels([np.asarray(self.ds[v].variable[uniq].values) for v in self.variables])
        self._check_finite(block, uniq)
        return block[inverse.reshape(tidx.shape)]

    def _check_finite(self, block: np.ndarray, tidx: np.ndarray) -> None:
        finite = np.isfinite(block)
        if finite.all():
            return
        bad_t, bad_c = np.argwhere(~finite.all(axis=(2, 3)))[0]
        channel = self.channels[bad_c]
        when = np.datetime64(self.ds["time"].values[tidx[bad_t]], "s")
        n_bad = int((~finite).sum())
        raise era5.DataError(
            f"{self.ds.attrs.get('source', '<dataset>')}: {channel}: non-finite values (NaN/Inf) at {when} "
            f"({n_bad} in the block read); the selected range cannot serve as training data"
        )


class Sampler:
    """Reproducible, shardable windows of (inputs, forcings, targets) over one split."""

    def __init__(
        self,
        ds: xr.Dataset,
        cfg: DataConfig,
        *,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        in_memory: bool | None = None,
    ):
        """Args:
        ds: a canonical dataset (from `era5.open`) already restricted to the split's times
          and to the configured variables and levels.
        cfg: batch size (per process), rollout steps k, model time step, seed, forcings.
        shuffle: permute samples per epoch (training); False gives time order (evaluation).
        process_index, process_count: this process's shard (jax.process_index/count).
        in_memory: force RAM or streaming; None decides from cfg.in_memory_max_gib.
        """
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.cfg = cfg
        self.stride = era5.check_training_ready(ds, cfg.timestep_hours)
        self.variables = tuple(names.long_name(v) for v in cfg.variables)
        store = ds.attrs.get("source", "<dataset>")
        for v in self.variables:
            if "time" not in ds[v].dims:
                raise era5.DataError(f"{store}: {v} has no time axis; list static fields under data.static")
        self.static = static_fields(ds, cfg.static)
        unknown = [f for f in cfg.forcings if f not in forcings.FORCINGS]
        if unknown:
            raise ValueError(f"unknown forcing(s) {unknown}; known: {list(forcings.FORCINGS)}")
        nbytes = sum(ds[v].size for v in self.variables) * 4
        if in_memory is None:
            in_memory = nbytes <= cfg.in_memory_max_gib * 2**30
        self.source = _Source(ds, self.variables, in_memory)
        self.channels = self.source.channels
        self.times = ds["time"].values
        self.lat = ds["latitude"].values
        self.lon = ds["longitude"].values
        self.shuffle = shuffle
        self.process_index = process_index
        self.process_count = process_count
        k, s = cfg.rollout_steps, self.stride
        self.anchors = np.arange(s, len(self.times) - k * s)  # valid indices of t
        self.offsets = np.arange(-1, k + 1) * s  # window offsets t - dt ... t + k dt
        global_batch = cfg.batch_size * process_count
        if len(self.anchors) < global_batch:
            raise era5.DataError(
                f"{ds.attrs.get('source', '<dataset>')}: {len(self.anchors)} samples in "
                f"{np.datetime64(self.times[0], 's')}..{np.datetime64(self.times[-1], 's')}, fewer than one "
                f"global batch ({cfg.batch_size} x {process_count} processes)"
            )
        self.steps_per_epoch = len(self.anchors) // global_batch

    @classmethod
    def from_config(cls, cfg: DataConfig, split: str, store: str | None = None, **kwargs) -> Sampler:
        """Open `store` (or cfg.store) restricted to the split ('train', 'validation', 'test')."""
        time_range = getattr(cfg, split)
        ds = era5.open(store or cfg.store, cfg.variables + cfg.static, cfg.levels, time_range.as_slice())
        return cls(ds, cfg, shuffle=kwargs.pop("shuffle", split == "train"), **kwargs)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def sample_indices(self, step: int) -> np.ndarray:
        """Indices into `anchors` of this process's samples at a global step, shape (B,)."""
        epoch, j = divmod(step, self.steps_per_epoch)
        if self.shuffle:
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.anchors))
        else:
            order = np.arange(len(self.anchors))
        b, p = self.cfg.batch_size, self.process_index
        start = j * b * self.process_count + p * b
        return order[start : start + b]

    def batch(self, step: int) -> Batch:
        """The batch of a global step (epochs follow each other: step // len(self) is the epoch)."""
        anchors = self.anchors[self.sample_indices(step)]
        tidx = anchors[:, None] + self.offsets[None, :]  # (B, k + 2)
        states = self.source.read(tidx)  # (B, k + 2, C, lat, lon)
        window_times = self.times[tidx]
        if self.cfg.forcings:
            f = forcings.compute(window_times.reshape(-1), self.lat, self.lon, self.cfg.forcings)
            f = f.reshape(tidx.shape + f.shape[1:])
        else:
            f = np.zeros(tidx.shape + (0, len(self.lat), len(self.lon)), np.float32)
        return Batch(
            inputs=states[:, :2],
            forcings=f,
            targets=states[:, 2:],
            times=self.times[anchors],
        )

    def iterate(self, start_step: int = 0, num_steps: int | None = None) -> Iterator[Batch]:
        """Batches for steps start_step, start_step + 1, ..., prepared by a background thread."""
        stop = threading.Event()
        q: queue.Queue = queue.Queue(maxsize=max(1, self.cfg.prefetch))
        end = None if num_steps is None else start_step + num_steps

        def produce() -> None:
            step = start_step
            try:
                while not stop.is_set() and (end is None or step < end):
                    item = self.batch(step)
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    step += 1
                q.put(_DONE)
            except BaseException as err:  # surfaced in the consumer
                q.put(_Failure(err))

        worker = threading.Thread(target=produce, name="weatherens-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)


_DONE = object()


@dataclasses.dataclass
class _Failure:
    error: BaseException
