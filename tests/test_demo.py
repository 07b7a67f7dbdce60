"""`weatherens demo --quick`: the README's main job end to end on the tiny world (the shipped tiny checkpoint)."""

from __future__ import annotations

import json

import xarray as xr

from weatherens import cli, demo


def test_quick_demo_runs_world_to_scorecard(tmp_path, capsys):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    assert cli.main(["demo", "--quick", "--quiet", "--cache", str(cache), "--out", str(runs)]) == 0
    out = capsys.readouterr().out
    exp = demo.experiment(quick=True)
    world = demo.world_path(cache, exp.world)
    assert world.exists() and not world.with_name(world.name + ".partial").exists()
    assert "using the shipped checkpoint" in out
    run_dir = runs / "demo-quick"
    for name in demo.NAMES:
        fc = xr.open_zarr(run_dir / "forecasts" / f"{name}.zarr", consolidated=False)
        assert int(fc["init_complete"].sum()) == fc.sizes["time"] == 2
        scores = xr.open_dataset(run_dir / f"scores.{name}.nc")
        assert json.loads(scores.attrs["missing"]) == {}
    assert "| geopotential@500 | 6 h |" in out and "÷ persistence" in out
    scores = {name: xr.load_dataset(run_dir / f"scores.{name}.nc") for name in demo.NAMES}
    for variable, level in demo.SCORECARD_CHANNELS:  # the shipped tiny model already beats persistence
        ml, base = scores["weatherens"][variable], scores["persistence"][variable]
        if level is not None:
            ml, base = ml.sel(level=level), base.sel(level=level)
        ratio = ml.sel(metric="crps_fair", region="global") / base.sel(metric="crps", region="global")
        assert float(ratio.max()) < 1.0, (variable, ratio.values)
    report = (run_dir / "report.md").read_text()
    assert "## Scorecard" in report and "![skill_" in report
    assert any((run_dir / "figures").glob("scorecard_*.png"))
    # a second run reuses every stage, the scores included
    outputs = [*(run_dir / "forecasts").glob("*.zarr/zarr.json"), *run_dir.glob("scores.*.nc")]
    mtimes = {p: p.stat().st_mtime_ns for p in outputs}
    assert cli.main(["demo", "--quick", "--quiet", "--cache", str(cache), "--out", str(runs)]) == 0
    assert "reusing the scores" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in outputs}
