"""The handle registry: local id -> :class:`Task`, and how a record reaches a handle.

One handle per task a session has handed out, created on first sight of its record. Every
change goes the same way: written to the store (never downgrading), then shown by the handle
(:class:`TaskState`), then queued as a :class:`TaskEvent` for the subscribers, before any
waiter of that handle wakes, so a wait that returns can wait for its event to be delivered.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.store import Store

from .events import EventBus, TaskEvent
from .task import Task, TaskOwner, TaskState

__all__ = ["Registry"]

logger = logging.getLogger("nanobanana_jupyter")


class Registry:
    """The handles of one session (thread-safe), and the one path for their changes."""

    def __init__(self, owner: TaskOwner, store: Store, events: EventBus) -> None:
        self._owner = owner
        self._store = store
        self.events = events
        self.lock = threading.RLock()
        self._handles: dict[str, Task] = {}
        self._states: dict[str, TaskState] = {}
        # What this session paid for and what it was handed back (see Session.credits).
        self.submitted: list[str] = []
        self.handed_back: list[str] = []

    def __contains__(self, local_id: str) -> bool:
        return local_id in self._handles

    def get(self, local_id: str) -> Task | None:
        """The handle for ``local_id``, or ``None``."""
        return self._handles.get(local_id)

    def all(self) -> list[Task]:
        """Every handle, oldest first."""
        with self.lock:
            return list(self._handles.values())

    def register(self, record: TaskRecord, *, announce: bool = False) -> Task:
        """The handle for ``record``'s task, created on first sight (``announce``: and its
        first state is an event)."""
        with self.lock:
            handle = self._handles.get(record.local_id)
            if handle is None:
                state = TaskState(record)
                handle = Task(self._owner, state)
                self._handles[record.local_id] = handle
                self._states[record.local_id] = state
                if announce:
                    self.events.publish(TaskEvent(handle, record))
            return handle

    def mark_submitted(self, handle: Task) -> None:
        """``handle``'s request is sent by this session (paid here)."""
        with self.lock:
            self.submitted.append(handle.local_id)

    def mark_reused(self, handle: Task) -> None:
        """``handle`` was handed back for an identical request: say so on the handle, count
        it in the store (``reuses``, durable, atomic across processes) and here."""
        self._states[handle.local_id].mark_reused()
        with self.lock:
            self.handed_back.append(handle.local_id)
        try:
            stored = self._store.count_reuse(handle.local_id)
        except (sqlite3.Error, OSError) as exc:  # the count is bookkeeping: reuse anyway
            logger.warning("task %s: could not count its reuse: %s", handle.local_id, exc)
            return
        if stored is not None:
            self.show(handle.local_id, stored)

    def show(self, local_id: str, record: TaskRecord) -> None:
        """Move the handle (if any) to ``record`` and tell the subscribers."""
        handle = self._handles.get(local_id)
        state = self._states.get(local_id)
        if handle is None or state is None:
            return
        state.update(record, lambda: self.events.publish(TaskEvent(handle, record)))

    def set(self, local_id: str, **changes: Any) -> TaskRecord:
        """Write a change to the store (never downgrading) and tell the handle and views."""
        handle = self._handles.get(local_id)
        current = handle.record if handle is not None else self._store.get(local_id)
        if current is None:
            raise KeyError(local_id)
        stored = self._store.update(current.replace(updated_at=time.time(), **changes))
        self.show(local_id, stored)
        return stored

    def set_many(self, local_ids: Sequence[str], **changes: Any) -> list[TaskRecord]:
        """:meth:`set` of the same change on many tasks, in one store transaction."""
        now = time.time()
        current = [
            handle.record if (handle := self._handles.get(i)) is not None else self._store.get(i)
            for i in local_ids
        ]
        stored = self._store.update_many(
            [r.replace(updated_at=now, **changes) for r in current if r is not None]
        )
        for record in stored:
            self.show(record.local_id, record)
        return stored

    def end_in_memory(self, local_id: str, **changes: Any) -> None:
        """Show a change the store did not take (the handle ends all the same)."""
        handle = self._handles.get(local_id)
        if handle is not None:
            self.show(local_id, handle.record.replace(updated_at=time.time(), **changes))

    def refresh(self, record: TaskRecord) -> None:
        """Show a handle what the store now says (another kernel may have moved it on)."""
        handle = self._handles.get(record.local_id)
        if handle is not None and handle.record != record:
            self.show(record.local_id, record)

    def orphan_all(self) -> None:
        """The session closed: wake whoever waits on an unfinished task."""
        with self.lock:
            states = list(self._states.values())
        for state in states:
            state.orphan()
