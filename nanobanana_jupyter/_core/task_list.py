"""A list of tasks started together (``Session.map``, ``generate(..., n=)``, ``-n``).

A plain ``list`` in every way (indexing, slicing, ``len``, iteration, equality), plus waiting
for all of them and a display: shown as a cell's result, it is a gallery of the tasks' cards
with one progress line while any runs (the display layer draws it, installed into
:mod:`nanobanana_jupyter._store.presenter` like a single task's card).
"""

from __future__ import annotations

from typing import Any

from nanobanana_jupyter._store import presenter

from .task import Task

__all__ = ["TaskList"]


class TaskList(list[Task]):
    """Tasks started together, in the order they were asked for."""

    def wait(self, timeout: float | None = None) -> TaskList:
        """Wait until every task has ended (any outcome); the list itself.

        Args:
            timeout: seconds for all of them together; ``None`` waits as long as it takes.

        Raises:
            TimeoutError: some task is still running when the time is up (the tasks keep
                running; wait again, or ``session.resume()`` after a restart).
        """
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        for task in self:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            task.wait(left)
        return self

    def done(self) -> bool:
        """True when every task has ended."""
        return all(task.done() for task in self)

    def __repr__(self) -> str:
        return presenter.text(self, f"TaskList({list.__repr__(self)})")

    def _ipython_display_(self) -> None:
        presenter.show(self)

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]] | dict[str, Any]:
        return presenter.mimebundle(self, repr(self))
