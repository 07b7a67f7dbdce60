"""The command line: every command has help; errors are one clear line, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import xarray as xr

from helpers import canonical_dataset, write_zarr
from weatherens import cli, config

COMMANDS = ("demo", "world", "inspect", "stats", "verify", "compare", "train", "forecast", "baseline")


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: weatherens {command}" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "weatherens", "--help"], capture_output=True, text=True, check=True)
    assert "world" in out.stdout


def test_inspect_says_whether_a_store_can_train(tmp_path, capsys):
    good = write_zarr(canonical_dataset(), tmp_path / "good.zarr")
    assert cli.main(["inspect", str(good)]) == 0
    assert "ready for training at a 6 h step" in capsys.readouterr().out
    bad = write_zarr(canonical_dataset().isel(time=[0, 1, 3]), tmp_path / "bad.zarr")
    assert cli.main(["inspect", str(bad)]) == 0
    assert "not ready for training: " in capsys.readouterr().out


def test_stats_writes_and_reuses(tmp_path, capsys):
    store = write_zarr(canonical_dataset(ntime=20), tmp_path / "s.zarr")
    out = tmp_path / "norm.nc"
    args = ["stats", "--data", str(store), "--out", str(out), "--set", "data.variables=[temperature]",
            "--set", "data.levels=[500,850]", "--set", "data.train={start: '2000-01-01', end: '2000-01-03'}"]
    assert cli.main(args) == 0
    table = xr.open_dataset(out)
    assert table["temperature"].sel(statistic="std").shape == (2,)
    mtime = out.stat().st_mtime_ns
    assert cli.main(args) == 0
    assert out.stat().st_mtime_ns == mtime


def test_bad_input_is_one_line_naming_the_store(tmp_path, capsys):
    store = write_zarr(canonical_dataset(), tmp_path / "s.zarr")
    code = cli.main(["stats", "--data", str(store), "--out", str(tmp_path / "n.nc"), "--set", "data.variables=[q]"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("weatherens stats: error: ") and "s.zarr" in err and "specific_humidity" in err


def test_unknown_config_key_is_refused(capsys):
    assert cli.main(["stats", "--out", "x.nc", "--set", "data.bach_size=3"]) == 2
    assert "unknown key(s) ['bach_size']" in capsys.readouterr().err


def test_config_files_in_repo_load():
    from pathlib import Path

    paths = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert paths, "configs/ holds no experiment"
    for path in paths:
        exp = config.load(path)
        assert exp.name == path.stem
