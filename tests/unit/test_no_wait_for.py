"""No ``asyncio.wait_for`` in the package: on Python 3.10 and 3.11 it swallows a cancel that arrives as
its inner awaitable completes (the caller goes on as if never cancelled), which kept a closed
session's poll loop running (tests/reliability H14). ``async with time_limit(...)``
(``_wire/timeouts.py``) raises the cancel as it should."""

from __future__ import annotations

import ast
from pathlib import Path

import nanobanana_jupyter

PACKAGE = Path(nanobanana_jupyter.__file__).parent


def _calls_wait_for(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "wait_for":
            base = node.value
            if isinstance(base, ast.Name) and base.id == "asyncio":
                lines.append(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "asyncio"
            and any(alias.name == "wait_for" for alias in node.names)
        ):
            lines.append(node.lineno)
    return lines


def test_the_package_never_uses_asyncio_wait_for() -> None:
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := _calls_wait_for(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert found == {}, (
        f"use `async with time_limit(...)` from _wire/timeouts.py instead of wait_for: {found}"
    )


def test_the_rule_sees_both_spellings() -> None:
    assert _calls_wait_for(ast.parse("import asyncio\nawait asyncio.wait_for(x, 1)")) == [2]
    assert _calls_wait_for(ast.parse("from asyncio import sleep, wait_for")) == [1]
    assert _calls_wait_for(ast.parse("queue.ready.wait_for(pred, 1)")) == []
