"""What a part of the panel started: its tasks, and which of them were handed back.

The composer and the compare mode both keep this to show "this panel" totals: a task handed
back for an identical request made before the panel asked was not paid again, so it is left
out of what the panel spent. The caller holds the panel's lock.
"""

from __future__ import annotations

from decimal import Decimal

from nanobanana_jupyter._core.task import Task

__all__ = ["StartedTasks"]


class StartedTasks:
    """Every task a part started (cards may be dropped), in the order they started."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._reused: set[str] = set()  # identical earlier requests handed back, not paid again

    def add(self, task: Task, *, reused: bool) -> None:
        """Keep ``task``; ``reused`` when the session handed back an earlier request (only the
        first time a task is seen here: one this part paid for stays paid)."""
        if reused and task.local_id not in self._tasks:
            self._reused.add(task.local_id)
        self._tasks[task.local_id] = task

    def __contains__(self, local_id: object) -> bool:
        return local_id in self._tasks

    def tasks(self) -> list[Task]:
        """In the order they started."""
        return list(self._tasks.values())

    def paid_cost(self) -> Decimal:
        """What the tasks started here cost, leaving out those handed back."""
        paid = [t for t in self._tasks.values() if t.local_id not in self._reused]
        return sum((t.cost for t in paid if t.cost is not None), Decimal(0))

    def reused_count(self) -> int:
        return len(self._reused)
