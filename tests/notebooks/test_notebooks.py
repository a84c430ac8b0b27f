"""Every notebook in notebooks/ runs headless against a sandbox and shows images.

The notebooks are found by glob, so a new notebook is executed without touching this file.
Each runs in a fresh kernel with nbclient, its default session pointed at a sandbox started
here, ``NANOBANANA_WAIT=1`` (a headless run loses display updates that come after the last
cell) and an empty data directory; the parameterised notebook is run by papermill instead
(test_papermill.py). Committed notebooks carry no outputs and stay small.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nanobanana_jupyter.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# Run by tests/notebooks/test_papermill.py with the papermill command instead, and without
# NANOBANANA_WAIT (a stricter run of the same notebook: a second one here would prove nothing).
RUN_BY_PAPERMILL = {"papermill_batch.ipynb"}
MAX_COMMITTED_BYTES = 100 * 1024
# An executed notebook embeds previews, not full-size images: it stays well under this.
MAX_EXECUTED_BYTES = 3 * 1024 * 1024

IMAGE_TYPES = ("image/jpeg", "image/png")


def _outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One fast sandbox for every notebook of the module (tasks take a fraction of a second)."""
    with Sandbox(time_scale=0.05, max_side=256) as sb:
        yield sb


def test_the_notebooks_are_found() -> None:
    """notebooks/ holds the quickstart, the five guides and the papermill batch (so the glob
    below is not empty)."""
    names = {path.name for path in NOTEBOOKS}
    assert {
        "quickstart.ipynb",
        "panel_tour.ipynb",
        "batch_exploration.ipynb",
        "editing_chain.ipynb",
        "offline_sandbox.ipynb",
        "compare_and_curate.ipynb",
        "papermill_batch.ipynb",
    } <= names
    assert RUN_BY_PAPERMILL.issubset(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs_and_is_small(path: Path) -> None:
    """A committed notebook has no outputs, execution counts or widget state, and is < 100 KB."""
    assert path.stat().st_size < MAX_COMMITTED_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code"
    assert all(cell.outputs == [] for cell in code), f"{path.name} has outputs"
    assert all(cell.execution_count is None for cell in code), f"{path.name} was executed"
    assert "widgets" not in nb.metadata


def test_notebooks_match_their_generator() -> None:
    """notebooks/*.ipynb are what scripts/make_notebooks.py writes (edit the script, not the JSON)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.name not in RUN_BY_PAPERMILL], ids=lambda p: p.stem
)
def test_notebook_runs_against_the_sandbox(
    path: Path, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebook executes without an error and its saved form shows at least one image."""
    run_and_check_notebook(path, sandbox, tmp_path, monkeypatch)


def run_and_check_notebook(
    path: Path,
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kernel_name: str = "python3",
) -> Path:
    """The test above on any kernelspec (tests/colab runs Colab's pins); the saved copy."""
    # The kernel inherits these: its default session talks to the sandbox.
    monkeypatch.setenv("NANOBANANA_BASE_URL", sandbox.url)
    monkeypatch.setenv("NANOBANANA_ALLOW_LOCAL_URLS", "1")
    monkeypatch.setenv("NANOBANANA_API_KEY", sandbox.api_key)
    monkeypatch.setenv("NANOBANANA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NANOBANANA_WAIT", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=90,
        startup_timeout=60,
        kernel_name=kernel_name,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    started = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - started

    saved = tmp_path / path.name
    nbformat.write(nb, saved)
    reread = nbformat.read(saved, as_version=4)
    outputs = _outputs(reread)
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    images = [o for o in outputs if any(t in o.get("data", {}) for t in IMAGE_TYPES)]
    assert images, f"{path.name} produced no image output (ran {elapsed:.1f} s)"
    assert not [o for o in outputs if "application/javascript" in o.get("data", {})]
    assert saved.stat().st_size < MAX_EXECUTED_BYTES, f"{path.name}: {saved.stat().st_size} bytes"
    return saved
