"""Importing the package stays cheap and layered, checked in fresh interpreters.

Each test starts a Python subprocess (a clean ``sys.modules``), so they live here rather than
in tests/unit.
"""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def test_bare_import_pulls_in_no_heavy_dependency() -> None:
    """`import nanobanana_jupyter` imports neither httpx, Pillow, IPython, ipywidgets nor pandas."""
    loaded = _modules_after("import nanobanana_jupyter")
    for heavy in ("httpx", "PIL", "IPython", "ipywidgets", "pandas", "aiohttp"):
        assert heavy not in loaded, heavy


def test_client_layer_does_not_import_views() -> None:
    """The transport layer never imports IPython, ipywidgets or pandas (layering of design.md)."""
    loaded = _modules_after("import nanobanana_jupyter._wire.client; nanobanana_jupyter.Client")
    for view in ("IPython", "ipywidgets", "pandas", "aiohttp"):
        assert view not in loaded, view


def test_core_layer_does_not_import_views() -> None:
    """The session, its store and scheduler never import IPython, ipywidgets or pandas."""
    loaded = _modules_after("from nanobanana_jupyter import Session, History, Task")
    for view in ("IPython", "ipywidgets", "pandas"):
        assert view not in loaded, view
