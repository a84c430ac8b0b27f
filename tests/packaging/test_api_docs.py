"""The committed API reference (docs/api/) is what the generator writes from today's code."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

import nanobanana_jupyter
import nanobanana_jupyter.sandbox

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "api"
SCRIPT = ROOT / "scripts" / "build_api_docs.py"


def _generator() -> ModuleType:
    """scripts/build_api_docs.py as a module (registered, as its dataclasses need)."""
    name = "_nanobanana_build_api_docs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference regenerated into a temporary directory."""
    out = tmp_path_factory.mktemp("api")
    _generator().build(out)
    return out


def _files(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.md"))}


def test_committed_reference_is_up_to_date(generated: Path) -> None:
    """docs/api/ equals a fresh build (run `python scripts/build_api_docs.py` after changing docstrings)."""
    committed, fresh = _files(DOCS), _files(generated)
    assert sorted(committed) == sorted(fresh), "pages added or removed: regenerate docs/api"
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert stale == [], f"out of date: {stale}; run python scripts/build_api_docs.py"


def test_every_public_name_has_a_page(generated: Path) -> None:
    """Each name in __all__ (and the sandbox's __all__) has its own page, linked from the index."""
    index = (generated / "index.md").read_text(encoding="utf-8")
    pages = {
        **{name: f"{name}.md" for name in nanobanana_jupyter.__all__},
        **{name: f"sandbox.{name}.md" for name in nanobanana_jupyter.sandbox.__all__},
    }
    for name, page in pages.items():
        text = (generated / page).read_text(encoding="utf-8")
        assert text.splitlines()[2] == f"# `{name}`", page
        assert f"]({page})" in index, f"{page} is not linked from index.md"


def test_pages_are_deterministic_and_link_only_to_pages_that_exist(generated: Path) -> None:
    """No memory address or absolute path leaks into a page, and every relative link resolves."""
    for name, text in _files(generated).items():
        assert not re.search(r" at 0x[0-9a-f]+", text), name
        assert str(ROOT) not in text, name
        for target in re.findall(r"\]\(([^)#]+\.md)\)", text):
            assert (generated / target).is_file(), f"{name} links to missing {target}"


def test_docstring_sections_become_markdown() -> None:
    """Google-style sections turn into lists, reST roles into links, `::` blocks into code."""
    generator = _generator()
    linker = generator.Linker(generator.public_entries())
    text = linker.docstring(
        "Do it.\n\nArgs:\n    a: the first, see :class:`Session`\n        and more.\n"
        "    b, c: ``x`` values.\n\nExample::\n\n    do(1)\n"
    )
    assert "- `a`: the first, see [`Session`](Session.md) and more." in text
    assert "- `b`, `c`: `x` values." in text
    assert "```python\ndo(1)\n```" in text
