"""`weatherens forecast`: WB2-format ensemble hindcasts from trained checkpoints, resumable.

For each initialisation time t0 (skipping those already whole in `<out>.partial`): read the states at
t0 - dt and t0 (and the breeding history for bred vectors) from the data store, compute the forcings
over the forecast, and roll out the members of each checkpoint in member chunks, writing lead chunks
as they come (`output.ForecastWriter`). Several checkpoints share the members in contiguous blocks
(a multi-model ensemble); member j keeps its key whatever the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from weatherens import checkpoint
from weatherens.data import era5, forcings as forcings_lib, names
from weatherens.data.pipeline import read_states
from weatherens.errors import InputError, WeatherensError
from weatherens.infer import ensemble, output, perturbations


def parse_init_times(specs: Sequence[str]) -> np.ndarray:
    """'2000-06-01T00' items, or ranges 'START/END/STEP' with STEP like '24h' or '12h' (END inclusive)."""
    out = []
    for spec in specs:
        if "/" in spec:
            start, end, step = spec.split("/")
            hours = int(step.rstrip("h"))
            out += list(np.arange(np.datetime64(start, "h"), np.datetime64(end, "h") + 1, np.timedelta64(hours, "h")))
        else:
            out.append(np.datetime64(spec, "h"))
    return np.unique(np.asarray(out, "datetime64[ns]"))


def member_blocks(members: int, sources: int) -> list[tuple[int, int]]:
    """Contiguous member ranges, one per checkpoint, as equal as possible."""
    edges = np.linspace(0, members, sources + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def forecast(checkpoints: Sequence[str | Path], store: str, init_times: np.ndarray, members: int, lead_hours: int,
             out: str | Path, *, perturbation: str = "none", amplitude: float = 0.05, breeding_cycles: int = 4,
             seed: int = 0, lead_chunk: int = 4, member_chunk: int = 256, devices=None,
             progress: bool = True) -> Path:
    """Write the hindcast; returns the complete store's path. Every argument is checked (InputError
    naming it) before anything is written."""
    if perturbation not in perturbations.KINDS:
        raise InputError(f"perturbation {perturbation!r}: expected one of {perturbations.KINDS}")
    counts = {"--members": members, "member_chunk": member_chunk, "lead_chunk": lead_chunk,
              "--breeding-cycles": breeding_cycles if perturbation == "bred" else 1}
    for name, value in counts.items():
        if value < 1:
            raise InputError(f"{name} {value}: must be >= 1")
    if members < len(checkpoints):
        raise InputError(f"--members {members}: fewer than the {len(checkpoints)} checkpoints that share them")
    if not amplitude >= 0:
        raise InputError(f"--amplitude {amplitude}: must be >= 0")
    if len(init_times) == 0:
        raise InputError("--init-times: none given")
    member_chunk += member_chunk % 2  # bred +/- pairs stay in one chunk
    loaded = [checkpoint.load_for_inference(c) for c in checkpoints]
    first, _, meta = loaded[0]
    for p, _, m in loaded[1:]:
        if p.channels != first.channels or p.forcings != first.forcings or not np.array_equal(p.lat, first.lat):
            raise InputError(f"{checkpoints}: the checkpoints differ in channels, forcings or grid")
    data_cfg = meta["config"]["data"]
    dt = int(data_cfg["timestep_hours"])
    if lead_hours % dt or lead_hours <= 0:
        raise InputError(f"--lead-hours {lead_hours}: must be a positive multiple of the model step ({dt} h)")
    steps = lead_hours // dt
    step = np.timedelta64(dt, "h")
    variables = tuple(names.long_name(v) for v in data_cfg["variables"])
    ds = era5.open(store, variables, tuple(data_cfg["levels"]))
    history = breeding_cycles if perturbation == "bred" else 0
    needed = (np.asarray(init_times, "datetime64[ns]")[:, None] + np.arange(-1 - history, 1) * step).ravel()
    absent = np.setdiff1d(needed, ds["time"].values)
    if absent.size:
        raise InputError(f"{store}: no states at {', '.join(str(np.datetime64(t, 'h')) for t in absent[:4])}"
                         f"{' ...' if absent.size > 4 else ''}, which the --init-times need (the store covers "
                         f"{np.datetime64(ds['time'].values[0], 'h')} .. {np.datetime64(ds['time'].values[-1], 'h')})")
    blocks = member_blocks(members, len(loaded))
    sources = np.concatenate([[str(c)] * (b - a) for c, (a, b) in zip(checkpoints, blocks)])
    writer = output.ForecastWriter(
        out, first.channels, init_times, np.arange(1, steps + 1) * step, members, first.lat, first.lon,
        member_coords={"member_source": sources, "member_perturbation": [perturbation] * members},
        attrs={"checkpoints": ", ".join(map(str, checkpoints)), "checkpoint_steps": ", ".join(str(m["step"]) for _, _, m in loaded),
               "data": str(store), "seed": seed, "perturbation": perturbation, "amplitude": amplitude,
               "breeding_cycles": breeding_cycles if perturbation == "bred" else 0, "timestep_hours": dt,
               "model_config": str(meta["config"]["model"]), "source": "weatherens forecast"},
        variable_attrs={v: dict(ds[v].attrs) for v in variables})
    runners = [ensemble.EnsembleRunner(p, params, devices, lead_chunk) for p, params, _ in loaded]
    done = set(writer.completed().tolist())
    todo = [i for i in range(len(init_times)) if i not in done]
    bar = tqdm(total=len(todo) * members * steps, desc="forecast", unit="member-step", disable=not progress)
    for i in todo:
        t0 = np.datetime64(init_times[i], "ns")
        times = t0 + np.arange(-1 - history, 1) * step
        states = read_states(ds, variables, times)
        f_times = t0 + np.arange(-1 - history, steps + 1) * step
        f = forcings_lib.compute(f_times, first.lat, first.lon, first.forcings)
        root = ensemble.init_key(seed, t0)
        for runner, (a, b) in zip(runners, blocks):
            for m0 in range(a, b, member_chunk):
                ids = np.arange(m0, min(m0 + member_chunk, b))
                keys = ensemble.member_keys(root, ids)
                delta = None
                if perturbation == "gaussian":
                    delta = perturbations.gaussian(runner.predictor, keys, amplitude)
                elif perturbation == "bred":
                    delta = perturbations.bred_vectors(runner.predictor, runner.params, states, f[: history + 2],
                                                       keys, amplitude)
                for start, chunk in runner.rollout(states[-2], states[-1], f[history:], keys, steps, delta):
                    writer.write(i, slice(start, start + chunk.shape[0]), slice(int(ids[0]), int(ids[-1]) + 1), chunk)
                    bar.update(chunk.shape[0] * ids.size)
        writer.mark_complete(i)
    bar.close()
    path = writer.finish()
    if path is None:
        raise WeatherensError(f"{writer.partial}: some initialisation times are not complete")
    return path
