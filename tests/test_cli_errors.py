"""Bad input to every command: one line naming the argument, a non-zero exit, nothing left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import canonical_dataset, write_zarr
from weatherens import cli

TINY = str(Path(__file__).resolve().parents[1] / "checkpoints" / "tiny")
CHANNELS = ["--set", "data.variables=[geopotential,temperature,2m_temperature]", "--set", "data.levels=[500,850]"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """12 six-hourly states from 2000-01-01 of the tiny checkpoint's channels on 64 x 32."""
    return str(write_zarr(canonical_dataset(ntime=12), tmp_path_factory.mktemp("store") / "s.zarr"))


@pytest.fixture(scope="module")
def empty_forecast(tmp_path_factory):
    """A WB2-layout forecast store with no members."""
    ds = canonical_dataset(ntime=2).isel(time=[0]).expand_dims(number=0).expand_dims(
        prediction_timedelta=[np.timedelta64(6, "h")]).transpose("time", "prediction_timedelta", "number", ...)
    return str(write_zarr(ds, tmp_path_factory.mktemp("empty") / "empty.zarr"))


def _forecast(store, out, members="2", lead="12", init="2000-01-01T06", checkpoint=TINY):
    return ["forecast", "--checkpoint", checkpoint, "--data", store, "--init-times", init, "--members", members,
            "--lead-hours", lead, "--out", out]


def _baseline(kind, store, out, members="2", lead="12", init="2000-01-01T06"):
    return ["baseline", "--kind", kind, "--data", store, "--init-times", init, "--members", members,
            "--lead-hours", lead, "--out", out, *CHANNELS]


# (case, argv from (store, empty forecast, output path), what the one-line message must name)
CASES = [
    ("forecast: zero members", lambda s, e, o: _forecast(s, o, members="0"), "--members 0"),
    ("forecast: negative members", lambda s, e, o: _forecast(s, o, members="-3"), "--members -3"),
    ("forecast: lead not a multiple of the step", lambda s, e, o: _forecast(s, o, lead="7"), "--lead-hours 7"),
    ("forecast: zero lead", lambda s, e, o: _forecast(s, o, lead="0"), "--lead-hours 0"),
    ("forecast: init outside the store", lambda s, e, o: _forecast(s, o, init="2001-01-01T00"), "2001-01-01T00"),
    ("forecast: init without its previous state", lambda s, e, o: _forecast(s, o, init="2000-01-01T00"),
     "1999-12-31T18"),
    ("forecast: missing checkpoint", lambda s, e, o: _forecast(s, o, checkpoint=o + ".ckpt"), ".ckpt"),
    ("forecast: missing store", lambda s, e, o: _forecast(s + "-gone", o), "s.zarr-gone"),
    ("baseline: zero climatology members", lambda s, e, o: _baseline("climatology", s, o, members="0"), "--members 0"),
    ("baseline: persistence lead not a multiple", lambda s, e, o: _baseline("persistence", s, o, lead="5"),
     "--lead-hours 5"),
    ("baseline: persistence init outside", lambda s, e, o: _baseline("persistence", s, o, init="2000-02-01T00"),
     "2000-02-01T00"),
    ("train: one member", lambda s, e, o: ["train", "--data", s, "--workdir", o, "--set", "train.members=1"],
     "train.members"),
    ("train: negative learning rate", lambda s, e, o: ["train", "--data", s, "--workdir", o, "--set",
                                                       "train.learning_rate=-1"], "train.learning_rate"),
    ("train: rollout schedule", lambda s, e, o: ["train", "--data", s, "--workdir", o, "--set",
                                                 "train.rollout_lengths=[1,2]"], "train.rollout_starts"),
    ("verify: empty ensemble", lambda s, e, o: ["verify", "--forecast", e, "--truth", s, "--out", o], "empty forecast"),
    ("verify: missing forecast", lambda s, e, o: ["verify", "--forecast", o + ".zarr", "--truth", s, "--out", o],
     ".zarr"),
    ("stats: missing store", lambda s, e, o: ["stats", "--data", s + "-gone", "--out", o], "s.zarr-gone"),
]


@pytest.mark.parametrize("case,argv,names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(case, argv, names, store, empty_forecast, tmp_path,
                                                              capsys):
    out = tmp_path / "out"
    code = cli.main(argv(store, empty_forecast, str(out)))
    captured = capsys.readouterr()
    command = argv(store, empty_forecast, str(out))[0]
    assert code == 2, (case, captured.err)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"weatherens {command}: error: "), (case, captured.err)
    assert names in lines[0], (case, lines[0])
    assert "Traceback" not in captured.err
    assert not out.exists() and not list(tmp_path.glob("out*")), (case, list(tmp_path.iterdir()))


def test_debug_shows_the_traceback(store, tmp_path):
    from weatherens.errors import InputError

    with pytest.raises(InputError, match="--members 0"):
        cli.main(["--debug", *_forecast(store, str(tmp_path / "out"), members="0")])


def test_a_second_writer_is_refused_naming_the_holder(store, tmp_path, capsys):
    import os

    from weatherens import files

    out = tmp_path / "fc.zarr"
    with files.lock(out):
        assert cli.main(_forecast(store, str(out))) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"being written by process {os.getpid()}" in err and str(out) in err
        assert not out.exists()
    assert not files.lock_path(out).exists()  # released


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    import json
    import socket
    import subprocess
    import sys

    from weatherens import files

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    out = tmp_path / "workdir"
    files.lock_path(out).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "since": "then"}))
    with files.lock(out) as held:
        assert json.loads(held.read_text())["pid"] != dead_pid
    other_host = {"pid": dead_pid, "host": "elsewhere.example", "since": "then"}
    files.lock_path(out).write_text(json.dumps(other_host))
    with pytest.raises(files.LockedError, match="elsewhere.example"):
        with files.lock(out):
            pass
    assert json.loads(files.lock_path(out).read_text()) == other_host  # never taken from another host
