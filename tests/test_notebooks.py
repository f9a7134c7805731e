"""notebooks/: every notebook is a jupytext pair (percent-format .py, the reviewed source, and an .ipynb without
outputs) and executes top to bottom in a real kernel (nbclient) on tiny models."""

from __future__ import annotations

import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from tests.conftest import SQUAD_DEV, require_shared

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_quickstart", "02_what_was_skimmed", "03_results")


def _code(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("name", NAMES)
def test_pair_is_in_sync_and_stripped(name):
    py, ipynb = NOTEBOOKS / f"{name}.py", NOTEBOOKS / f"{name}.ipynb"
    source, stored = jupytext.read(py), nbformat.read(ipynb, as_version=4)
    nbformat.validate(stored)
    assert _code(source) == _code(stored), f"{ipynb.name} differs from {py.name}: run `jupytext --sync {py}`"
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{ipynb.name}: outputs are not stripped"
    assert stored.metadata["jupytext"]["formats"] == "ipynb,py:percent"


def _execute(name: str, timeout: int = 240):
    from nbclient import NotebookClient

    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    t0 = time.monotonic()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb, time.monotonic() - t0


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") + "".join(str(v) for k, v in o.get("data", {}).items() if k.startswith("text/")))
    return "\n".join(out)


def test_quickstart_then_what_was_skimmed_execute(tmp_run_root):
    require_shared(SQUAD_DEV)
    nb, seconds = _execute("01_quickstart")
    ckpt = tmp_run_root / "logs" / "notebooks" / "01_quickstart" / "blockskim" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and str(ckpt) in _text(nb)
    assert "FLOPs speed-up" in _text(nb) and "image/png" in str(nb.cells)
    # bounds catch a notebook that trains or reads far more than it says (minutes, not hours), with room for a CI
    # machine ~2x slower than usual: a tight bound failed CI once on a slow day (test_data_validation)
    assert seconds < 240, seconds
    nb, seconds = _execute("02_what_was_skimmed")
    text = _text(nb)
    assert str(ckpt) in text and "Super Bowl" in text  # the first SQuAD dev examples, read from ../shared/data
    assert "text/html" in str(nb.cells) and "image/png" in str(nb.cells)
    assert seconds < 180, seconds


def test_results_executes(tmp_run_root):
    nb, seconds = _execute("03_results")
    text = _text(nb)
    assert "blockskim" in text and "transkimmer" in text and "image/png" in str(nb.cells)
    assert seconds < 180, seconds
