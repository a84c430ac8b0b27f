"""Change events: what a session tells its subscribers when a task moves on.

An event carries the task's handle and the immutable record of the change it reports, so a
subscriber shows the state the event was sent for, even when the task has moved on since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nanobanana_jupyter._store.records import TaskRecord

if TYPE_CHECKING:
    from .task import Task

__all__ = ["TaskEvent"]


@dataclass(frozen=True)
class TaskEvent:
    """A task changed: ``record`` is its state as of this change (immutable)."""

    task: Task
    record: TaskRecord
