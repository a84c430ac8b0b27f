"""Kernels that run what Google Colab ships (IPython 7.34, ipykernel 6.17, ipywidgets 7.7.1,
jupyter_client 7), driven from this process (the main environment's jupyter_client).

The kernel's Python is ``NANOBANANA_COLAB_PYTHON``, which ``make test`` sets to the second
virtual environment that ``make colab-venv`` builds in ``.venv-colab`` (pins: pins.txt here).
Without that variable the tests use ``.venv-colab/bin/python`` of the checkout if it exists;
otherwise they FAIL under ``make test`` or CI (``CI=true``), and skip, loudly, when a
developer runs pytest by hand.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PINS = Path(__file__).with_name("pins.txt")
KERNEL_NAME = "nanobanana-colab"
HOW_TO_BUILD = (
    "build it with `make colab-venv` (.venv-colab, Colab's pins from tests/colab/pins.txt) "
    "and set NANOBANANA_COLAB_PYTHON=$PWD/.venv-colab/bin/python; `make test` does both"
)

# Read at import: the suite's autouse fixture clears NANOBANANA_* before every test.
_GIVEN = os.environ.get("NANOBANANA_COLAB_PYTHON", "")
_REQUIRED = os.environ.get("CI") == "true" or bool(_GIVEN)


def pinned_versions() -> dict[str, str]:
    """``{distribution: version}`` from pins.txt (``name==version`` lines)."""
    pins = {}
    for line in PINS.read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==(\S+)\s*(#.*)?", line)
        if match:
            pins[match[1].lower().replace("-", "_")] = match[2]
    return pins


def _missing(reason: str) -> None:
    message = f"COLAB-PINS TESTS NOT RUN: {reason}; {HOW_TO_BUILD}"
    if _REQUIRED:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def colab_python() -> str:
    """The Colab environment's Python, or a failure (make test, CI) or a skip (by hand)."""
    path = Path(_GIVEN) if _GIVEN else ROOT / ".venv-colab" / "bin" / "python"
    if not _GIVEN and not path.exists():
        _missing("NANOBANANA_COLAB_PYTHON is not set and there is no .venv-colab")
    if not (path.is_file() and os.access(path, os.X_OK)):
        _missing(f"{path} is not an executable Python")
    return str(path)


@pytest.fixture(scope="module")
def colab_kernel_name(colab_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kernelspec, in a directory of its own on JUPYTER_PATH, that starts the Colab Python."""
    root = tmp_path_factory.mktemp("colab-kernelspec")
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [colab_python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Colab's pins", "language": "python"})
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join([str(root), os.environ.get("JUPYTER_PATH", "")]))
        yield KERNEL_NAME
