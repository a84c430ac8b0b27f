"""The sandbox's public surface and its independence from the rest of the package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nanobanana_jupyter.sandbox as sandbox_package

SANDBOX_DIR = Path(sandbox_package.__file__).parent


def test_all_is_explicit_sorted_and_importable() -> None:
    """__all__ is sorted, unique, and every name in it resolves."""
    names = sandbox_package.__all__
    assert names == sorted(set(names))
    assert {"Fault", "Ledger", "Sandbox", "TaskPlan", "serve"} <= set(names)
    for name in names:
        assert getattr(sandbox_package, name) is not None


def test_sources_import_nothing_from_the_rest_of_the_package() -> None:
    """No sandbox module imports the client side (so no parsing code is shared with it)."""
    offenders = []
    for path in sorted(SANDBOX_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                outside = node.level > 1 or (
                    node.level == 0
                    and (node.module or "").startswith("nanobanana_jupyter")
                    and not (node.module or "").startswith("nanobanana_jupyter.sandbox")
                )
                if outside:
                    offenders.append(f"{path.name}: from {'.' * node.level}{node.module}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("nanobanana_jupyter"):
                        offenders.append(f"{path.name}: import {alias.name}")
    assert offenders == []


def test_importing_the_sandbox_loads_no_client_module() -> None:
    """At run time too, importing the sandbox pulls in no other package module than the root."""
    code = (
        "import sys, nanobanana_jupyter\n"
        "before = set(sys.modules)\n"
        "import nanobanana_jupyter.sandbox\n"
        "new = sorted(m for m in set(sys.modules) - before if m.startswith('nanobanana_jupyter'))\n"
        "print('\\n'.join(new))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out
    assert all(m.startswith("nanobanana_jupyter.sandbox") for m in out), out
