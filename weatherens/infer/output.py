"""Forecasts as WeatherBench 2 zarr, streamed per initialisation time and resumable after a kill.

Layout (docs/architecture.md's forecast zarr): dims `time` (initialisation), `prediction_timedelta`,
`number`, then `level, latitude, longitude`; variables with ERA5 long names in physical units,
float32, chunked (1 init, 1 lead, up to MEMBER_CHUNK members, all levels, the whole grid); per-member
coordinates (`member_source`, `member_perturbation`) say which checkpoint and perturbation each
member used; `attrs` hold the provenance. The store is built as `<out>.partial`: its metadata is
written first (nothing else), each init's fields are written by region, and the init is marked in the
`init_complete` (time) flag only after all its fields are written. A run started again with the same
plan (same inits, leads, members, variables and provenance) skips the marked inits and rewrites any
other; when every init is marked the store is renamed to `<out>`, so `<out>` is always whole and a
partial one is never mistaken for it.
"""

from __future__ import annotations

import logging
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import dask.array as dsa
import numpy as np
import xarray as xr
import zarr

from weatherens import files
from weatherens.data import names
from weatherens.data.names import LEAD_DIM as LEAD
from weatherens.data.names import MEMBER_DIM as MEMBER

log = logging.getLogger(__name__)

MEMBER_CHUNK = 64
PLAN_ATTR = "weatherens_forecast_plan"


def split_channels(channels: Sequence[str]) -> dict[str, list[tuple[int, int | None]]]:
    """'variable@level' channel names -> {variable: [(channel index, level or None), ...]} in channel order."""
    out: dict[str, list[tuple[int, int | None]]] = {}
    for i, name in enumerate(channels):
        variable, level = names.parse_channel(name)
        out.setdefault(variable, []).append((i, level))
    return out


def default_attrs(variable: str) -> dict:
    return names.attrs(variable)


class ForecastWriter:
    """Writes one WB2 forecast store; see the module doc for the guarantees.

    Args:
      path: the final store path (`<path>.partial` while incomplete).
      channels: the model's channel names; variables and levels follow from them.
      inits: (T,) datetime64 initialisation times; leads: (L,) timedelta64 leads (the first may be 0).
      members: M; lat, lon: grid coordinates in degrees.
      member_coords: optional {name: (M,) values} per-member coordinates (e.g. member_source).
      attrs: provenance; part of the plan a resumed run must match.
      variable_attrs: CF attributes per variable (units, long_name); default: the physics world's.
    """

    def __init__(self, path: str | Path, channels: Sequence[str], inits, leads, members: int, lat, lon,
                 member_coords: Mapping[str, Sequence | np.ndarray] | None = None, attrs: Mapping | None = None,
                 variable_attrs: Mapping[str, Mapping] | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.variables = split_channels(channels)
        self.inits = np.asarray(inits, "datetime64[ns]")
        self.leads = np.asarray(leads, "timedelta64[ns]")
        self.members = int(members)
        self.variable_attrs = {v: dict((variable_attrs or {}).get(v) or default_attrs(v)) for v in self.variables}
        self.plan = json.dumps({
            "channels": list(channels), "inits": [str(t) for t in self.inits],
            "leads_hours": [float(x / np.timedelta64(1, "h")) for x in self.leads], "members": self.members,
            "member_coords": {k: [str(v) for v in vals] for k, vals in (member_coords or {}).items()},
            "attrs": {k: str(v) for k, v in (attrs or {}).items()},
        }, sort_keys=True)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: a complete forecast is already there; remove it or choose another --out")
        if self.partial.exists() and not self._matches():
            log.warning("forecast: %s was started with another plan; starting over", self.partial)
            shutil.rmtree(self.partial)
        if not self.partial.exists():
            self._create(lat, lon, member_coords or {}, attrs or {})
        self.group = zarr.open_group(str(self.partial), mode="r+")

    def _matches(self) -> bool:
        try:
            return zarr.open_group(str(self.partial), mode="r").attrs.get(PLAN_ATTR) == self.plan
        except Exception:  # unreadable partial: start over
            return False

    def _create(self, lat, lon, member_coords, attrs) -> None:
        levels = sorted({lev for pairs in self.variables.values() for _, lev in pairs if lev is not None})
        t, nl, m = len(self.inits), len(self.leads), self.members
        mc = min(m, MEMBER_CHUNK)
        data = {}
        for variable, pairs in self.variables.items():
            has_level = pairs[0][1] is not None
            if has_level and [lev for _, lev in pairs] != sorted(cast("list[int]", [lev for _, lev in pairs])):
                raise ValueError(f"{variable}: channel levels {[lev for _, lev in pairs]} are not ascending")
            shape = (t, nl, m) + ((len(pairs),) if has_level else ()) + (len(lat), len(lon))
            chunks = (1, 1, mc) + shape[3:]
            dims = ("time", LEAD, MEMBER) + (("level",) if has_level else ()) + ("latitude", "longitude")
            data[variable] = (dims, dsa.full(shape, np.nan, dtype=np.float32, chunks=chunks),
                              self.variable_attrs[variable])
        data["init_complete"] = (("time",), dsa.zeros((t,), dtype=np.int8, chunks=(t,)),
                                 {"long_name": "1 when every field of this initialisation is written"})
        coords: dict[str, Any] = {"time": self.inits, LEAD: self.leads, MEMBER: np.arange(m),
                                  "latitude": np.asarray(lat, np.float64), "longitude": np.asarray(lon, np.float64)}
        if levels:
            coords["level"] = ("level", np.asarray(levels, np.int64), {"units": "hPa", "long_name": "pressure level"})
        for name, values in member_coords.items():
            coords[name] = (MEMBER, np.asarray([str(v) for v in values], dtype=object))
        ds = xr.Dataset(data, coords=coords, attrs={**{k: str(v) for k, v in attrs.items()}, PLAN_ATTR: self.plan})
        ds["latitude"].attrs.update(units="degrees_north", long_name="latitude")
        ds["longitude"].attrs.update(units="degrees_east", long_name="longitude")
        ds.to_zarr(self.partial, mode="w", compute=False, zarr_format=3, consolidated=False)

    def _array(self, name: str) -> zarr.Array:
        """The store's array `name` (zarr types a member as array or group)."""
        return cast(zarr.Array, self.group[name])

    def completed(self) -> np.ndarray:
        """Indices of the inits already whole."""
        return np.flatnonzero(self._array("init_complete")[:] == 1)

    def write(self, init_index: int, lead_slice: slice, member_slice: slice, states: np.ndarray) -> None:
        """states (leads in slice, members in slice, C, lat, lon) in physical units, channel order."""
        for variable, pairs in self.variables.items():
            idx = [i for i, _ in pairs]
            block = states[:, :, idx] if pairs[0][1] is not None else states[:, :, idx[0]]
            self._array(variable)[init_index, lead_slice, member_slice] = block.astype(np.float32)

    def mark_complete(self, init_index: int) -> None:
        self._array("init_complete")[init_index] = 1

    def finish(self) -> Path | None:
        """Rename to the final path when every init is whole; returns it (None while incomplete)."""
        if len(self.completed()) < len(self.inits):
            return None
        files.consolidate_zarr(self.partial)
        self.partial.rename(self.path)
        return self.path
