"""The magic, the quickstart and the key on what Google Colab ships (issue 19, item 1).

Two kernels and one notebook run: one kernel (module-scoped) for the cards, ``--wait``, the
one-line errors and the panel's refusal; one nbclient kernel for the saved notebook that must
never hold the key; and the quickstart executed by nbclient. The assertions are those of
tests/kernel and tests/notebooks, run here on the Colab kernelspec (conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from nanobanana_jupyter.sandbox import Sandbox
from tests.colab.conftest import pinned_versions
from tests.conftest import SENTINEL_KEY
from tests.kernel import test_magic_kernel as magic_tests
from tests.kernel.conftest import Kernel, start_kernel
from tests.notebooks import test_notebooks as notebook_tests

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def _stream(ex: object) -> str:
    return "".join(m["content"]["text"] for m in ex.of_type("stream"))  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def colab_sandbox() -> Iterator[Sandbox]:
    """Tasks of about 3 s (as tests/kernel's), accepting the sentinel key."""
    with Sandbox(time_scale=0.5, duration=6.0, max_side=256, api_key=SENTINEL_KEY) as sb:
        yield sb


@pytest.fixture(scope="module")
def colab_kernel(
    colab_sandbox: Sandbox, colab_kernel_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kernel]:
    """One kernel on Colab's pins for the module, the extension loaded."""
    data_dir = tmp_path_factory.mktemp("colab-kernel") / "data"
    with pytest.MonkeyPatch.context() as mp:  # set up before the suite's clean environment
        for name in [n for n in os.environ if n.startswith(("NANOBANANA_", "DEFAPI_"))]:
            mp.delenv(name)
        k = start_kernel(colab_sandbox, data_dir, kernel_name=colab_kernel_name)
    try:
        ex = k.execute("%load_ext nanobanana_jupyter")
        assert not ex.of_type("error"), ex.of_type("error")
        yield k
    finally:
        k.close()


def test_the_kernel_runs_colabs_pins(colab_kernel: Kernel, colab_python: str) -> None:
    """The kernel is the Colab environment's Python with exactly the pinned versions, and
    imports the package from this checkout without the panel extra (no anywidget)."""
    ex = colab_kernel.execute(
        "import sys, importlib.metadata as md, importlib.util as u, nanobanana_jupyter\n"
        "print(sys.executable)\n"
        "for name in ('ipython', 'ipywidgets', 'ipykernel', 'jupyter_client', 'notebook'):\n"
        "    print(name, md.version(name))\n"
        "print('anywidget', u.find_spec('anywidget') is not None)\n"
        "print('package', nanobanana_jupyter.__file__)"
    )
    lines = _stream(ex).splitlines()
    assert lines[0] == colab_python
    versions = dict(line.split(" ", 1) for line in lines[1:])
    for name, version in pinned_versions().items():
        assert versions[name] == version, (name, versions[name], version)
    assert versions["anywidget"] == "False"
    assert versions["package"].startswith(str(Path(__file__).resolve().parents[2]))


def test_card_updates_in_place_while_another_cell_blocks(colab_kernel: Kernel) -> None:
    """The cell returns at once; the same display id is updated to the image while the next
    cell sleeps (tests/kernel's assertions)."""
    magic_tests.test_magic_returns_at_once_and_updates_while_another_cell_blocks(colab_kernel)


def test_wait_saves_the_image(colab_kernel: Kernel) -> None:
    """--wait blocks until the task is done and the cell's own output has the image."""
    magic_tests.test_wait_blocks_until_the_image_is_there(colab_kernel)


def test_user_errors_are_one_line(colab_kernel: Kernel) -> None:
    """Each of tests/kernel's user mistakes prints one line and no traceback under IPython 7."""
    for cell, fragment in magic_tests.USER_ERRORS:
        magic_tests.check_user_error_is_one_line(colab_kernel, cell, fragment)


PANEL_LINE = (
    "the panel needs ipywidgets 8 and this kernel has ipywidgets {version} (as Colab ships, "
    "where it must stay): use the magic's cards (%%nanobanana) instead, or elsewhere "
    "pip install 'nanobanana-jupyter[panel]' and restart the kernel"
)


def test_panel_says_in_one_line_why_not_and_what_instead(colab_kernel: Kernel) -> None:
    """On ipywidgets 7, %nanobanana panel prints one line (no traceback) and Panel() raises
    an ImportError whose message is that line; the magic still works afterwards."""
    line = PANEL_LINE.format(version=pinned_versions()["ipywidgets"])
    ex = colab_kernel.execute("%nanobanana panel")
    assert not ex.of_type("error"), ex.of_type("error")
    text = _stream(ex).strip()
    assert text.endswith(line) and len(text.splitlines()) == 1, text
    assert "Traceback" not in text
    assert not ex.of_type("display_data")  # no widget was shown

    ex = colab_kernel.execute("from nanobanana_jupyter import Panel\nPanel()")
    errors = ex.of_type("error")
    assert len(errors) == 1, ([m for _, m in ex.messages], colab_kernel.collect(1.0))
    (error,) = errors
    assert error["content"]["ename"] == "ImportError"
    assert error["content"]["evalue"] == line

    ex = colab_kernel.execute("%nanobanana status nothing-like-this")
    assert "no such task" in _stream(ex)


def test_saved_notebook_has_the_image_and_never_the_key(
    colab_sandbox: Sandbox, colab_kernel_name: str, tmp_path: Path
) -> None:
    """nbclient on Colab's pins: the saved notebook holds the image and the sentinel key is
    nowhere in it or on disk, even after a failing cell under IPython 7's %xmode Verbose."""
    magic_tests.check_saved_notebook_has_the_image_and_never_the_key(
        colab_sandbox, tmp_path, colab_kernel_name
    )


def test_quickstart_runs_on_colabs_pins(
    colab_kernel_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """notebooks/quickstart.ipynb executes without an error and saves images (tests/notebooks'
    assertions), and neither the saved notebook nor the history holds the key."""
    path = notebook_tests.NOTEBOOK_DIR / "quickstart.ipynb"
    with Sandbox(time_scale=0.05, max_side=256, api_key=SENTINEL_KEY) as sb:
        saved = notebook_tests.run_and_check_notebook(
            path, sb, tmp_path, monkeypatch, colab_kernel_name
        )
    assert SENTINEL_KEY not in saved.read_text()
    for file in (tmp_path / "data").rglob("*"):
        if file.is_file():
            assert SENTINEL_KEY.encode() not in file.read_bytes(), file
    outputs = notebook_tests._outputs(nbformat.read(saved, as_version=4))
    assert any("text/html" in o.get("data", {}) for o in outputs)  # the history's table
