"""The public surface is explicit: one sorted __all__, every name importable.

That the imports stay lazy (checked in fresh interpreters) is tests/packaging/test_imports.py.
"""

from __future__ import annotations

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
