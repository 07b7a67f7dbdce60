"""The notebooks in notebooks/ run from top to bottom and compute what they say.

Each notebook is executed with nbclient on the `python3` kernel (ipykernel's kernel of the
interpreter running pytest, so the same virtual environment), working directory notebooks/.
A cell that raises fails the test with the cell's traceback. Each notebook ends with a cell
tagged `summary` that displays its computed numbers as JSON; the tests check those.
The committed notebooks carry no outputs.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 600


def execute(name: str, monkeypatch, tmp_path: Path) -> tuple[object, float]:
    """Run notebooks/<name> in a fresh kernel; returns the executed notebook and its wall time.

    The kernel inherits this process's environment: its temporary files (tempfile.mkdtemp) go to
    tmp_path, so that a notebook stopped by a failing cell leaves nothing behind either."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    # numpy's OpenBLAS spins its threads against the other test workers on a small shared machine: the
    # QR factorisations behind the 1-degree spherical-harmonic tables then take ~25 s instead of ~0.4 s.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    return nb, time.perf_counter() - start


def summary(nb) -> dict:
    """The JSON displayed by the cell tagged `summary`."""
    cells = [c for c in nb.cells if "summary" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'summary'"
    found = [o["data"]["application/json"] for o in cells[0].outputs if "application/json" in o.get("data", {})]
    assert found, f"the summary cell displayed no JSON; its outputs: {cells[0].outputs}"
    return found[0]


def finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@pytest.mark.parametrize("name", ["quickstart.ipynb", "verify_era5.ipynb"])
def test_committed_notebooks_are_valid_and_carry_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"


@pytest.mark.slow
def test_quickstart(monkeypatch, tmp_path):
    nb, wall = execute("quickstart.ipynb", monkeypatch, tmp_path)
    out = summary(nb)
    print(f"quickstart.ipynb: {wall:.0f} s; stages {out['seconds']}")
    assert finite([out["train_loss_first"], out["train_loss_last"]])
    # every lead of both inits has truth in the world, so everything was scored
    for variable, n_init in out["n_init"].items():
        assert n_init == [out["inits"]] * out["leads"], variable
    for key in ("z500_crps_fair", "z500_persistence_crps", "t2m_crps_fair", "t2m_persistence_crps"):
        assert len(out[key]) == out["leads"] and finite(out[key]) and min(out[key]) > 0, key
    # errors grow with lead time (z500: the chaotic world, for the ensemble and persistence alike)
    assert out["z500_crps_fair"][-1] > 2 * out["z500_crps_fair"][0]
    assert out["z500_persistence_crps"][-1] > 2 * out["z500_persistence_crps"][0]
    # after seconds of training the ensemble is about persistence; it must not be worse at the first lead
    assert out["z500_crps_fair"][0] <= 1.05 * out["z500_persistence_crps"][0]
    assert finite(out["z500_ssr_debiased"]) and min(out["z500_ssr_debiased"]) > 0
    assert finite(out["z500_rmse_ratio"]) and min(out["z500_rmse_ratio"]) > 0
    for figure in ("skill_geopotential_500.png", "scorecard_crps_fair_weatherens_vs_persistence.png",
                   "rank_weatherens_geopotential_500.png"):
        assert figure in out["figures"]


@pytest.mark.slow
def test_verify_era5(monkeypatch, tmp_path):
    """The real-ERA5 notebook on the samples in tests/data/era5."""
    nb, wall = execute("verify_era5.ipynb", monkeypatch, tmp_path)
    out = summary(nb)
    print(f"verify_era5.ipynb: {wall:.0f} s")
    assert out["lead_hours"] in (7.0, 8.0)  # the samples' irregular steps, taken as they are
    assert out["members"] == 10
    assert set(out["scores"]) == {"2m_temperature", "mean_sea_level_pressure",
                                  "10m_u_component_of_wind", "10m_v_component_of_wind"}
    for variable, s in out["scores"].items():
        numbers = [s[m] for m in ("crps", "crps_fair", "rmse", "spread", "ssr", "ssr_debiased", "persistence MAE")]
        assert finite(numbers) and min(numbers) > 0, variable
        assert s["crps_fair"] < s["crps"], variable  # the fair CRPS removes the finite-ensemble penalty
        # real 7-8 h changes as perturbations: about the size of the real error, and better than persistence
        assert 0.5 < s["ssr_debiased"] < 2, variable
        assert s["crps_fair"] < s["persistence MAE"], variable
    assert all(p > 0 and math.isfinite(p) for p in out["sh_min_power_l_ge_1"].values())
    assert out["zonal_min_power_k_ge_1"] > 0 and math.isfinite(out["zonal_min_power_k_ge_1"])
    assert out["parseval_error_t2m"] < 1e-3
    for variable, total in out["rank_histogram_sums"].items():
        assert total == pytest.approx(1.0), variable
