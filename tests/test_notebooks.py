"""Notebooks: every ``notebooks/*.ipynb`` is committed without outputs and runs top to bottom.

Execution uses CI mode (``TOXLENS_NOTEBOOK_TINY=1``: the notebook's model cell builds a tiny seeded Llama
via ``notebooks/_tiny.py``), with ``notebooks/`` as the working directory, through nbclient and the
``python3`` Jupyter kernel of this interpreter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _python_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Name of a Jupyter kernel that runs this interpreter.

    A venv made by scripts/setup.sh has one: ipykernel installs ``share/jupyter/kernels/python3`` into it,
    whose ``argv[0]`` is ``python`` — which jupyter_client replaces by ``sys.executable``. If ``python3``
    is missing or resolves to some other interpreter (e.g. a user-level spec shadowing it), a spec for
    ``sys.executable`` is written to a temporary ``JUPYTER_PATH`` instead.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    plain = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    try:
        exe = KernelSpecManager().get_kernel_spec("python3").argv[0]
        if exe in plain or Path(exe).resolve() == Path(sys.executable).resolve():
            return "python3"
    except NoSuchKernel:
        pass
    name = "toxlens-test-python"
    spec_dir = tmp_path / "jupyter" / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "toxlens test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return name


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") != [] or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or an execution count; strip them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_in_tiny_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = _python_kernel(tmp_path, monkeypatch)
    monkeypatch.setenv("TOXLENS_NOTEBOOK_TINY", "1")  # the kernel inherits this environment
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's temporary files end up under tmp_path
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=kernel,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed in tiny mode:\n{err}")
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error outputs {errors}"
    assert all(c.get("execution_count") is not None for c in nb.cells if c.cell_type == "code")
