"""Change events: what a session tells its subscribers when a task moves on.

An event carries the task's handle and the immutable record of the change it reports, so a
subscriber shows the state the event was sent for, even when the task has moved on since.

The :class:`EventBus` delivers events outside the store write and off the submit path: a
change is queued (quick), and one delivery thread per bus calls the subscribers, in the order
the changes were made. A subscriber that fails is logged and never stops delivery; no thread
runs before somebody subscribed and something changed; the thread holds the bus only weakly
between events (a dropped session is collected) and ends when the bus is closed or collected.
:meth:`EventBus.drain` lets a waiter know that every event queued so far has been delivered.
"""

from __future__ import annotations

import collections
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nanobanana_jupyter._store.records import TaskRecord

if TYPE_CHECKING:
    from .task import Task

__all__ = ["DRAIN_TIMEOUT", "EventBus", "TaskEvent"]

logger = logging.getLogger("nanobanana_jupyter")

# Seconds a waiter waits for the subscribers to catch up (a subscriber stuck for longer
# must not hang the wait for ever: the flush after the wait shows the state anyway).
DRAIN_TIMEOUT = 10.0

Listener = Callable[["TaskEvent"], object]


@dataclass(frozen=True)
class TaskEvent:
    """A task changed: ``record`` is its state as of this change (immutable)."""

    task: Task
    record: TaskRecord


class _Queue:
    """The events waiting for delivery, shared by a bus and its delivery thread.

    It refers to no subscriber, so the thread waiting on it keeps nothing alive.
    """

    def __init__(self) -> None:
        self.ready = threading.Condition()
        self.events: collections.deque[TaskEvent] = collections.deque()
        self.queued = 0  # events ever queued
        self.delivered = 0  # events whose delivery has ended
        self.stopping = False
        self.thread: threading.Thread | None = None

    def stop(self) -> None:
        with self.ready:
            self.stopping = True
            self.ready.notify_all()


def _deliver(queue: _Queue, bus_ref: weakref.ref[EventBus]) -> None:
    """The delivery thread: one event at a time, to the subscribers of the moment."""
    while True:
        with queue.ready:
            while not queue.events and not queue.stopping:
                queue.ready.wait()
            if not queue.events:
                queue.thread = None
                return
            event = queue.events.popleft()
        bus = bus_ref()
        listeners = bus.listeners if bus is not None else ()
        del bus
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a view's failure must not stop the others, nor later events
                logger.exception("a session listener failed")
        del event, listeners
        with queue.ready:
            queue.delivered += 1
            queue.ready.notify_all()


class EventBus:
    """Subscribers of a session's task changes, and the thread that calls them."""

    def __init__(self, name: str = "nanobanana-events") -> None:
        self._name = name
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._queue = _Queue()
        weakref.finalize(self, self._queue.stop)

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The subscribers now, in the order they subscribed."""
        with self._lock:
            return tuple(self._listeners)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Deliver every later event to ``listener``; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def publish(self, event: TaskEvent) -> None:
        """Queue ``event`` for the subscribers (returns at once; nothing if there are none)."""
        if not self._listeners:
            return
        queue = self._queue
        with queue.ready:
            if queue.stopping:
                return
            queue.events.append(event)
            queue.queued += 1
            queue.ready.notify_all()
            # None, or not alive in a forked child (threads do not cross a fork).
            if queue.thread is None or not queue.thread.is_alive():
                queue.thread = threading.Thread(
                    target=_deliver, args=(queue, weakref.ref(self)), name=self._name, daemon=True
                )
                queue.thread.start()

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> bool:
        """Wait until every event queued before this call has been delivered.

        Returns at once on the delivery thread itself (a subscriber that waits); False when
        ``timeout`` passed first.
        """
        queue = self._queue
        with queue.ready:
            if queue.thread is threading.current_thread():
                return True
            target = queue.queued
            return queue.ready.wait_for(
                lambda: (
                    queue.delivered >= target or queue.thread is None or not queue.thread.is_alive()
                ),
                timeout,
            )

    def close(self) -> None:
        """Deliver what is queued, then let the thread end; later events are dropped."""
        self._queue.stop()
