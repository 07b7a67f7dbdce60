"""`weatherens verify`: score forecasts, write the scores datasets atomically, draw the plots."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from weatherens import files
from weatherens.data import era5
from weatherens.verify import evaluate, forecast


def scores_path(out: Path, name: str, several: bool) -> Path:
    """`out` for one forecast; `out` with the forecast's name before the suffix for several."""
    return out.with_name(f"{out.stem}.{name}{out.suffix or '.nc'}") if several else out


def write_scores(scores: xr.Dataset, path: Path) -> None:
    """netCDF written to a temporary name in the same folder, then renamed: never half-written."""
    files.write_netcdf_atomic(scores, path)


@contextlib.contextmanager
def _scheduler(address: str | None):
    if not address:
        yield None
        return
    from dask.distributed import Client  # optional: pip install "dask[distributed]"

    with Client(address) as client:
        yield client


def verify(
    forecasts: Sequence[str],
    truth: str,
    out: Path,
    *,
    names: Sequence[str] | None = None,
    climatology: str | None = None,
    variables: Sequence[str] | None = None,
    regions: Sequence[str] = evaluate.REGIONS,
    thresholds: Sequence[str] = (),
    plots: Path | None = None,
    baseline: str | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    spectra_of: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Score every forecast against `truth`; returns the scores files written.

    With `plots`, draws skill-vs-lead (all forecasts together), spectra and rank histograms,
    and a scorecard of the first forecast against `baseline` (a name; default the second forecast).
    Spectra are computed for the forecasts named in `spectra_of` (default: all).
    """
    names = list(names) if names else [Path(str(f).rstrip("/")).stem for f in forecasts]
    if len(names) != len(forecasts) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per forecast, got {names} for {len(forecasts)} forecasts")
    truth_ds = forecast.open_truth(truth)
    clim = era5.open(climatology) if climatology else None
    written, all_scores = [], []
    with _scheduler(scheduler):
        for path, name in zip(forecasts, names):
            fc_ds = forecast.open_forecast(path, variables)
            scores = evaluate.evaluate(
                fc_ds, truth_ds, regions=regions, climatology=clim, thresholds=thresholds,
                seed=seed, name=name, progress=progress, with_spectra=spectra_of is None or name in spectra_of,
            )
            target = scores_path(Path(out), name, len(forecasts) > 1)
            write_scores(scores, target)
            written.append(target)
            all_scores.append(scores)
            missing = json.loads(scores.attrs["missing"])
            if missing:
                print(f"weatherens verify: {name}: no truth for {missing}")
    if plots is not None:
        from weatherens.verify import plots as plots_mod

        base = None
        if baseline is not None:
            if baseline not in names:
                raise ValueError(f"baseline {baseline!r} is not one of the forecasts {names}")
            base = all_scores[names.index(baseline)]
        elif len(all_scores) > 1:
            base = all_scores[1]
        plots_mod.all_plots(all_scores, Path(plots), baseline=base)
    return written
