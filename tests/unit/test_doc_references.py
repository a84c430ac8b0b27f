"""Every test the README and the reliability matrix name exists, so each guarantee points at a
real test (issue 7: "the README's guarantees each point to a passing test")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# `tests/x/test_y.py::test_z`, and the shorthand `::test_z` for the file named just before.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):  # test_x = Machine.TestCase
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _references(document: Path) -> list[tuple[str, str]]:
    found = []
    current = None
    for match in REFERENCE.finditer(document.read_text(encoding="utf-8")):
        current = match.group(1) or current
        assert current is not None, f"{match.group(0)} names no file"
        found.append((current, match.group(2)))
    return found


@pytest.mark.parametrize("document", ["README.md", "docs/reliability-matrix.md"])
def test_every_named_test_exists(document: str) -> None:
    references = _references(ROOT / document)
    assert len(references) >= 5
    missing = [
        f"{file}::{name}"
        for file, name in references
        if not (ROOT / file).is_file() or name not in _tests_in(ROOT / file)
    ]
    assert missing == []


def test_readme_names_a_test_for_every_guarantee() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| **")]
    assert len(rows) >= 5
    for row in rows:
        assert REFERENCE.search(row), row
