"""`weatherens demo --quick`: the README's main job end to end on the tiny world (the shipped tiny checkpoint),
run from an installed wheel; the demo's checkpoint rule, baselines and inits."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from weatherens import cli, config, demo
from weatherens.verify import report

ROOT = Path(__file__).resolve().parents[1]
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "weatherens", "configs", "checkpoints")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """weatherens built as a wheel and installed (not editable) into a fresh virtual environment, with
    uv where it is installed beside the tests (its cache makes this seconds), else pip: the venv's bin/."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in WHEEL_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp / "dist")],
                   check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("weatherens-*.whl")
    venv = tmp / "venv"
    if importlib.util.find_spec("uv") is not None:
        uv = [sys.executable, "-m", "uv"]
        subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([*uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(wheel)], check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], check=True)
    return venv / "bin"


@pytest.mark.slow
def test_the_installed_wheel_runs_the_quick_demo_from_an_empty_directory(installed, tmp_path, capsys):
    """`weatherens demo --quick`, the README's main job on the tiny world, run by the console script of an
    installed wheel from an empty directory: the configs and the shipped checkpoint come from the package.
    A second run (in this process, from the checkout) reuses every stage."""
    empty, cache, runs = tmp_path / "empty", tmp_path / "cache", tmp_path / "runs"
    empty.mkdir()

    def weatherens(*args: str) -> str:
        res = subprocess.run([str(installed / "weatherens"), *args], cwd=empty, capture_output=True, text=True,
                             timeout=900)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        return res.stdout

    assert "demo" in weatherens("--help")
    out = weatherens("demo", "--quick", "--quiet", "--cache", str(cache), "--out", str(runs))
    assert not list(empty.iterdir())
    exp = demo.experiment(quick=True)
    world = demo.world_path(cache, exp.world)
    assert world.exists() and not world.with_name(world.name + ".partial").exists()
    shipped = re.search(r"using the shipped checkpoint (\S+) ", out).group(1)
    assert Path(shipped).resolve().is_relative_to(installed.parent.resolve())  # the wheel's copy, not the checkout's
    run_dir = runs / "demo-quick"
    for name in demo.NAMES:
        fc = xr.open_zarr(run_dir / "forecasts" / f"{name}.zarr", consolidated=False)
        assert int(fc["init_complete"].sum()) == fc.sizes["time"] == exp.demo.max_inits
        scores = xr.open_dataset(run_dir / f"scores.{name}.nc")
        assert json.loads(scores.attrs["missing"]) == {}
    assert "| geopotential@500 | 6 h |" in out and "÷ persistence" in out and "skill fraction" in out
    assert "± " in out and "AR(1)" in out  # every ratio with its interval
    scores = {name: xr.load_dataset(run_dir / f"scores.{name}.nc") for name in demo.NAMES}
    for variable, level in demo.SCORECARD_CHANNELS:  # the shipped tiny model already beats persistence
        ml, base = scores["weatherens"][variable], scores["persistence"][variable]
        if level is not None:
            ml, base = ml.sel(level=level), base.sel(level=level)
        ratio = ml.sel(metric="crps_fair", region="global") / base.sel(metric="crps", region="global")
        assert float(ratio.max()) < 1.0, (variable, ratio.values)
    text = (run_dir / "report.md").read_text()
    assert "## Scorecard" in text and "![skill_" in text
    assert any((run_dir / "figures").glob("paired_scorecard_*.png"))
    scores_ml = scores["weatherens"]["temperature_per_init"]
    assert scores_ml.sizes["init_time"] == exp.demo.max_inits
    table = report.interval_table(scores, demo.SCORECARD_CHANNELS)
    assert set(table["baseline"].values) == set(demo.NAMES[1:])
    persistence = table.sel(baseline="persistence")  # the tiny model's lead over persistence is significant
    assert bool(persistence["significant"].all()) and float(persistence["high"].max()) < 1.0
    # a second run reuses every stage, the scores included
    outputs = [*(run_dir / "forecasts").glob("*.zarr/zarr.json"), *run_dir.glob("scores.*.nc")]
    mtimes = {p: p.stat().st_mtime_ns for p in outputs}
    capsys.readouterr()
    assert cli.main(["demo", "--quick", "--quiet", "--cache", str(cache), "--out", str(runs)]) == 0  # in-process
    assert capsys.readouterr().out.count("reusing the scores") == len(demo.NAMES)
    assert mtimes == {p: p.stat().st_mtime_ns for p in outputs}
    # `weatherens compare` prints the same intervals from the scores files
    files = [str(run_dir / f"scores.{n}.nc") for n in ("weatherens", "persistence")]
    assert cli.main(["compare", *files, "--leads", "6", "48"]) == 0
    printed = capsys.readouterr().out
    half = (float(persistence["high"].sel(channel="temperature@850").isel(lead_time=-1))
            - float(persistence["low"].sel(channel="temperature@850").isel(lead_time=-1))) / 2
    row = next(line for line in printed.splitlines() if line.startswith("| temperature@850 | 2 d |"))
    assert "▼" in row and (f"± {half:.2f}" in row or f"± {half:.3f}" in row), (row, half)


def test_a_checkpoint_fits_another_realisation_of_the_same_climate_only():
    exp = demo.experiment(quick=False)
    long = config.load(demo.CONFIGS / "small-long.yaml")
    assert long.model == exp.model and long.train == exp.train  # the shipped small is small.yaml's recipe
    assert demo.checkpoint_misfit(config.to_dict(long), exp) is None  # seed 1 for seed 0: unseen
    same_seed = config.to_dict(dataclasses.replace(long, world=dataclasses.replace(long.world, seed=exp.world.seed)))
    assert "its train split" in demo.checkpoint_misfit(same_seed, exp)  # 2000-01..2001-12 holds the test June
    apart = config.to_dict(exp)  # the same realisation with the splits apart from the test: fits
    assert demo.checkpoint_misfit(apart, exp) is None
    apart["data"]["validation"] = {"start": "2000-06-15", "end": "2000-07-31T18"}
    assert "its validation split" in demo.checkpoint_misfit(apart, exp)
    apart["data"]["validation"] = {"start": "2000-05-01", "end": "2000-05-31"}  # the whole of May 31: apart
    assert demo.checkpoint_misfit(apart, exp) is None
    apart["data"]["validation"] = {"start": "2000-05-01", "end": "2000-06-01"}  # the whole of June 1: not
    assert "its validation split" in demo.checkpoint_misfit(apart, exp)
    other = config.to_dict(dataclasses.replace(long, world=dataclasses.replace(long.world, resolution="T63")))
    assert "world.resolution: 'T63' there, 'T42' here" in demo.checkpoint_misfit(other, exp)
    fewer = config.to_dict(dataclasses.replace(long, data=dataclasses.replace(long.data, levels=(500,))))
    assert "data.levels" in demo.checkpoint_misfit(fewer, exp)


def test_the_baselines_a_run_makes_come_from_its_config():
    long = demo.experiment(quick=False, path=demo.CONFIGS / "small-long.yaml")
    assert demo.run_names(long) == ("weatherens", "persistence", "climatology")
    assert demo.run_names(demo.experiment(quick=True)) == demo.NAMES
    with pytest.raises(config.ConfigError, match=r"demo.baselines = \('persistence', 'ifs'\): must be a subset"):
        demo.experiment(quick=True, overrides=("demo.baselines=[persistence, ifs]",))


def test_demo_inits_are_spread_over_the_test_split(tmp_path):
    """Every init_every_hours from the test split's start, each with its whole forecast inside the test
    split and the archive, at most max_inits."""
    import numpy as np
    import pandas as pd

    times = pd.date_range("2000-05-25", "2000-06-30T18", freq="6h").values
    world = tmp_path / "w.zarr"
    xr.Dataset(coords={"time": times}).to_zarr(world)
    exp = demo.experiment(quick=False)
    inits = demo.demo_inits(world, exp)
    want = np.arange(np.datetime64("2000-06-01T00"), np.datetime64("2000-06-21T00"), np.timedelta64(60, "h"))[:8]
    np.testing.assert_array_equal(inits, want.astype("datetime64[ns]"))
    assert inits[-1] + np.timedelta64(240, "h") <= times[-1]
    short = demo.experiment(quick=False, overrides=("demo.lead_hours=1000",))  # 41.7 days
    with pytest.raises(ValueError, match="no init time every 60 h in the test split"):
        demo.demo_inits(world, short)
