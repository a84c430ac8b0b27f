"""The package's layers are folders, and each imports only from the layers below it.

Read from the code's own imports (every ``import`` statement, at module level, inside
functions and under ``TYPE_CHECKING``), so that a lazy import cannot slip past. The table is
README's and docs/architecture.md's; a change to it is a change of the architecture.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

import nanobanana_jupyter

PACKAGE = "nanobanana_jupyter"
ROOT = Path(nanobanana_jupyter.__file__).parent

# Bottom to top. A module may import its own layer and every layer before it.
LAYERS = ["_wire", "_store", "_core", "_display", "_views"]
# What outside the standard library each layer may import (besides the layers below it).
THIRD_PARTY = {
    # google.colab: the key from Colab secrets; async_timeout: asyncio.timeout on 3.10;
    # platformdirs: the default data directory; dotenv: the .env file (settings.py)
    "_wire": {"httpx", "httpcore", "google", "async_timeout", "platformdirs", "dotenv"},
    "_store": {"PIL", "pandas"},  # pandas inside History.to_pandas only
    "_core": {"aiohttp", "pandas"},  # the webhook receiver's server; Grid.to_pandas only
    "_display": set(),
    "_views": {"IPython", "ipywidgets", "traitlets", "anywidget"},
}
# Modules at the package's top: the public surface (which composes the layers) and the
# version, which any layer may read.
TOP = {f"{PACKAGE}", f"{PACKAGE}.__main__"}
ANYONE = {f"{PACKAGE}._version"}
# The one place below the views that starts a sandbox: Session.sandbox(), the factory that
# README and the notebooks use (and the command's `nanobanana sandbox`). It imports only the sandbox's public package, lazily; the
# sandbox never imports the client's code (test below).
SANDBOX_USERS = {f"{PACKAGE}._core.sandboxed", f"{PACKAGE}._views.cli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            # `from . import x` / `from ..pkg import mod`: the names may be modules.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if _is_package_module(candidate):
                    yield node.lineno, candidate


def _is_package_module(name: str) -> bool:
    if not name.startswith(PACKAGE + "."):
        return False
    relative = Path(*name.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative).is_dir()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE and parts[1] in LAYERS else None


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "sandbox" not in p.relative_to(ROOT).parts)


def test_every_module_lives_in_a_layer_folder() -> None:
    """No implementation module sits flat beside the public surface."""
    stray = [
        _module_name(p)
        for p in _sources()
        if _layer(_module_name(p)) is None and _module_name(p) not in TOP | ANYONE
    ]
    assert stray == []


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_the_layers(path: Path) -> None:
    """A module imports only its own layer, the layers below, and its allowed libraries."""
    module = _module_name(path)
    wrong = _wrong_imports(module, _imports(path))
    assert wrong == [], f"{module} imports against the layers"


def _wrong_imports(module: str, imports: Iterable[tuple[int, str]]) -> list[str]:
    layer = _layer(module)
    if layer is None:  # the top: it composes everything
        return []
    allowed_layers = set(LAYERS[: LAYERS.index(layer) + 1])
    allowed_libraries = set().union(*(THIRD_PARTY[name] for name in allowed_layers))
    wrong = []
    for line, target in imports:
        top = target.split(".")[0]
        if top == PACKAGE:
            if target in ANYONE or target == PACKAGE:
                if target == PACKAGE:
                    wrong.append(f"line {line}: {target} (the public surface sits on top)")
                continue
            if target.startswith(f"{PACKAGE}.sandbox"):
                if module not in SANDBOX_USERS:
                    wrong.append(f"line {line}: {target} (only the sandbox factories start one)")
                continue
            target_layer = _layer(target)
            if target_layer not in allowed_layers:
                wrong.append(f"line {line}: {target} ({target_layer} is above {layer})")
        elif top not in sys.stdlib_module_names and top not in allowed_libraries:
            wrong.append(f"line {line}: {target} (a library {layer} may not import)")
    return wrong


def test_views_never_import_each_other() -> None:
    """The magic, the panel and the command each stand on the layers below, never on another."""
    views = {}
    for path in _sources():
        module = _module_name(path)
        if _layer(module) == "_views":
            view = module.split(".")[2] if module.count(".") >= 2 else None
            if view is not None:
                views[path] = view
    crossing = []
    for path, view in views.items():
        for line, target in _imports(path):
            parts = target.split(".")
            if len(parts) > 2 and parts[1] == "_views" and parts[2] != view:
                crossing.append(f"{_module_name(path)} line {line}: {target}")
    assert crossing == []


def test_the_sandbox_imports_nothing_of_the_client() -> None:
    """The sandbox reads requests with its own code: it never imports the rest of the package."""
    sandbox_files = sorted((ROOT / "sandbox").glob("*.py"))
    assert sandbox_files, "sandbox sources not found"
    wrong = [
        f"{path.name} line {line}: {target}"
        for path in sandbox_files
        for line, target in _imports(path)
        if target.split(".")[0] == PACKAGE and not target.startswith(f"{PACKAGE}.sandbox")
    ]
    assert wrong == []


def test_the_checker_sees_wrong_imports() -> None:
    """The rule above can fail: upward, lazy, relative and library imports are all reported."""
    source = (
        "import json\n"
        "from .records import TaskRecord\n"
        "def show():\n"
        "    from .._display import html\n"
        "    import IPython\n"
        "    from nanobanana_jupyter.sandbox import Sandbox\n"
    )
    module = f"{PACKAGE}._store.probe"
    wrong = _wrong_imports(module, _imports_in(source, f"{PACKAGE}._store"))
    assert [w.split(":")[0] for w in wrong] == ["line 4", "line 4", "line 5", "line 6"]


def test_no_import_cycles() -> None:
    """No two modules of the package import each other, directly or round a loop."""
    graph: dict[str, set[str]] = {}
    for path in _sources():
        module = _module_name(path)
        graph[module] = {
            target
            for _, target in _imports(path)
            if _layer(target) is not None and target != module and _is_package_module(target)
        }
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
