"""The public surface is explicit: one sorted __all__, every name importable, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import nanobanana_jupyter


def test_all_is_sorted_and_unique() -> None:
    """__all__ lists each name once, in sorted order."""
    names = nanobanana_jupyter.__all__
    assert len(names) == len(set(names))
    assert names == sorted(names, key=lambda n: (not n.isupper(), n[0].islower(), n))


def test_every_public_name_resolves() -> None:
    """Every name in __all__ can be fetched, including the lazily imported ones."""
    for name in nanobanana_jupyter.__all__:
        assert getattr(nanobanana_jupyter, name) is not None, name


def test_dir_lists_the_public_names() -> None:
    """dir() shows lazily exported names too, so tab completion finds them."""
    assert set(nanobanana_jupyter.__all__) <= set(dir(nanobanana_jupyter))


def test_private_modules_are_not_exported() -> None:
    """No underscore module is part of the public surface."""
    assert not [n for n in nanobanana_jupyter.__all__ if n.startswith("_") and n != "__version__"]


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


def test_sandbox_shares_no_code_with_the_client() -> None:
    """No sandbox module imports the rest of the package (its parsing must be independent)."""
    import ast
    from pathlib import Path

    root = Path(nanobanana_jupyter.__file__).parent / "sandbox"
    offenders = []
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                outside_relative = node.level >= 2
                outside_absolute = (
                    node.level == 0
                    and module.startswith("nanobanana_jupyter")
                    and not module.startswith("nanobanana_jupyter.sandbox")
                )
                if outside_relative or outside_absolute:
                    offenders.append(f"{path.name}: from {'.' * node.level}{module}")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.name}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("nanobanana_jupyter")
                    and not a.name.startswith("nanobanana_jupyter.sandbox")
                ]
    assert list(root.glob("*.py")), "sandbox sources not found"
    assert offenders == []
