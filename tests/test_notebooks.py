"""Execute every teaching notebook in ``notebooks/`` in its fast setting, so that they never rot.

Each notebook reads ``FLOWSIM_NOTEBOOK_FAST=1`` (smaller horizons and sizes) and checks what it tells the reader
in ``assert`` cells, so a failed claim fails this test with the notebook's own message. The kernel is the
``python3`` kernel of the running interpreter (ipykernel), started with the test process's environment plus
the fast switch. Needs the ``test`` extra (nbclient, nbformat, ipykernel): ``pip install -e ".[test]"``.

All five take about 1 minute on 2 cores (kernel start-up included); ``pytest -s`` prints each notebook's wall time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 600


def _missing_dependency() -> str | None:
    for module in ("nbformat", "nbclient", "ipykernel"):
        try:
            __import__(module)
        except ImportError:
            return (
                f"executing the notebooks needs {module!r} (nbformat, nbclient, ipykernel), which is not installed: "
                'pip install -e ".[test]"'
            )
    return None


def test_all_five_notebooks_are_present():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01_mirror_maps",
        "02_linear_implicit_bias",
        "03_sparse_vs_dense_features",
        "04_relu_kinks_filippov",
        "05_flow_vs_mirror_descent",
    ], names


# the three longest notebooks (about 15 s each on a busy machine) run with `pytest -m slow`
_SLOW_NOTEBOOKS = ("03_sparse_vs_dense_features", "04_relu_kinks_filippov", "05_flow_vs_mirror_descent")


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in _SLOW_NOTEBOOKS else p for p in NOTEBOOKS],
    ids=[p.stem for p in NOTEBOOKS],
)
def test_notebook_executes_in_fast_mode(path: Path, tmp_path, monkeypatch):
    reason = _missing_dependency()
    if reason is not None:
        pytest.skip(reason)
    import nbformat
    from nbclient import NotebookClient

    # the kernel inherits this process's environment
    monkeypatch.setenv("FLOWSIM_NOTEBOOK_FAST", "1")
    monkeypatch.delenv("FLOWSIM_GALLERY_DIR", raising=False)  # never overwrite docs/gallery from a test
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # run in a scratch directory
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error or failed assert
    print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s (fast mode)")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    n_asserts = sum("assert " in c.source for c in nb.cells if c.cell_type == "code")
    assert n_asserts >= 1, f"{path.name} checks none of its claims in an assert cell"
