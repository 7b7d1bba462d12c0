"""notebooks/explore_run.ipynb runs top to bottom against a freshly trained smoke run, so it cannot rot."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_run.ipynb"


def test_explore_run_notebook_executes(smoke_run, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="needs the test extra: pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="needs the test extra: pip install -e '.[test]'")
    monkeypatch.setenv("DIAMOND_CKPT", str(smoke_run / "checkpoints" / "last.ckpt"))  # run folder: from the ckpt
    monkeypatch.delenv("DIAMOND_RUN_DIR", raising=False)
    monkeypatch.delenv("DIAMOND_LOG_DIR", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails

    text, mimes = [], set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            mimes.update(out.get("data", {}))
    text = "".join(text)
    assert "game Breakout" in text
    assert "test: 1 episodes" in text  # the replay browser found the final evaluation's game
    assert "PSNR per imagined step" in text
    assert "denoiser/train/loss_denoising" in text  # read back from the TensorBoard event file
    assert {"image/gif", "image/png"} <= mimes
