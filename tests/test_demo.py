"""`weatherens demo --quick`: the README's main job end to end on the tiny world."""

from __future__ import annotations

from weatherens import cli, demo


def test_quick_demo_builds_the_world_and_serves_it_as_training_data(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--quiet", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    exp = demo.experiment(quick=True)
    path = demo.world_path(tmp_path, exp.world)
    assert path.exists() and not path.with_name(path.name + ".partial").exists()
    assert f"physics world {path}" in out
    assert "18 channels: geopotential@250" in out
    assert "Normalization statistics of the training split" in out
    stats_file = path.with_name(path.stem + "-normalization.nc")
    assert stats_file.exists()
    # a second run reuses the cached world and statistics
    before = (path / "zarr.json").stat().st_mtime_ns, stats_file.stat().st_mtime_ns
    assert cli.main(["demo", "--quick", "--quiet", "--cache", str(tmp_path)]) == 0
    assert ((path / "zarr.json").stat().st_mtime_ns, stats_file.stat().st_mtime_ns) == before
