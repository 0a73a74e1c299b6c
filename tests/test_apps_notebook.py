"""notebooks/applications.ipynb runs every application end to end (tiny chain, 2 denoising steps)."""

from __future__ import annotations

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from apps_fixtures import FRAMES, shared_tiny_chain
from training_helpers import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "applications.ipynb"
EXPECTED_GIFS = {"inputs", "image_to_video", "inpaint", "outpaint", "cinemagraph", "sdedit", "stylized"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return shared_tiny_chain(tmp_path_factory)


def test_the_applications_notebook_runs_and_shows_every_application(tmp_path, chain, monkeypatch):
    settings = {"LUMIERE_CONDITIONAL_CKPT": chain.conditional_ckpt, "LUMIERE_BASE_CKPT": chain.base_ckpt,
                "LUMIERE_STYLE_DIR": chain.style_dir, "LUMIERE_APPS_OUT": str(tmp_path / "gifs"),
                "LUMIERE_APPS_STEPS": "2", "LUMIERE_APPS_FRAMES": str(FRAMES), "PROJECT_ROOT": str(REPO_ROOT),
                "LUMIERE_APPS_THREADS": str(torch.get_num_threads())}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    written = {path.stem for path in (tmp_path / "gifs").glob("*.gif")}
    assert written == EXPECTED_GIFS
    shown = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
             if "image/gif" in output.get("data", {}) or "image/png" in output.get("data", {})]
    assert len(shown) == len(EXPECTED_GIFS), "every application should display its result inline"
    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors
