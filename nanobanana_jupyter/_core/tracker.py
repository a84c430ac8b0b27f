"""Following submitted tasks to their end: polling with leases, resume, watching rows another
writer moves on, the poll loop's decisions, and abandoning (cancel).

A lease in the store keeps two kernels from polling the same task: a task whose lease another
kernel holds is *watched* (its row re-read every :data:`WATCH_INTERVAL`) and taken over when
that kernel's lease lapses. The maintenance loop (:func:`maintain`) renews this session's
leases every third of their lifetime and holds the tracker only weakly between rounds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import time
import weakref
from collections.abc import Sequence
from typing import Any

from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._store.store import Store
from nanobanana_jupyter._wire.models import TaskStatus
from nanobanana_jupyter._wire.settings import Settings
from nanobanana_jupyter._wire.timeouts import time_limit

from .collector import Collector
from .handles import Registry
from .poll_policy import Action, Decision
from .resources import Resources
from .support import report_failure
from .task import Task

__all__ = ["WATCH_INTERVAL", "Tracker", "maintain"]

logger = logging.getLogger("nanobanana_jupyter")

# Seconds between store re-reads of rows this session follows but another writer moves on
# (a reused request another session or kernel is sending or polling): its handle ends within
# about this long of the writer's. A read of one row each time, and only while there are any.
WATCH_INTERVAL = 0.5


async def maintain(tracker_ref: weakref.ref[Tracker], lease_every: float) -> None:
    """A session's maintenance loop: lease renewal and takeovers every ``lease_every``
    seconds, and every :data:`WATCH_INTERVAL` a re-read of the rows it follows.

    Holds the tracker only weakly between rounds: a dropped session is collected (and its
    finalizer cancels this loop); if it is already gone, the loop ends by itself.
    """
    loop = asyncio.get_running_loop()
    next_lease = loop.time() + lease_every
    while True:
        tracker = tracker_ref()
        if tracker is None or tracker.closed:
            return
        wake = tracker.watch_wake
        timeout = max(0.0, next_lease - loop.time())
        if tracker.watched:
            timeout = min(timeout, WATCH_INTERVAL)
        del tracker
        wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):  # not wait_for: it may swallow a cancel
            async with time_limit(timeout):
                await wake.wait()
        tracker = tracker_ref()
        if tracker is None:
            return
        try:
            if loop.time() >= next_lease:
                next_lease = loop.time() + lease_every
                tracker.maintain_leases()
            else:
                tracker.follow_watched()
        except Exception:  # the next round tries again
            logger.exception("lease maintenance failed")
        finally:
            del tracker


class Tracker:
    """Polls a session's submitted tasks, holding their leases, until they end."""

    def __init__(
        self,
        resources: Resources,
        registry: Registry,
        collector: Collector,
        *,
        settings: Settings,
        lease_ttl: float,
    ) -> None:
        self._res = resources
        self._store: Store = resources.store
        self._scheduler = resources.scheduler
        self._engine = resources.engine
        self._owner = resources.owner
        self._registry = registry
        self._collector = collector
        self._settings = settings
        self._lease_ttl = lease_ttl
        # Rows another writer moves on that this session follows by reading the store (a
        # reused request not sent yet, a task another kernel polls); set to re-read them now.
        self.watched: set[str] = set()
        self.watch_wake = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._res.closed

    # -- starting to follow ------------------------------------------------------------

    def handle_for(self, record: TaskRecord) -> Task:
        """A handle for a stored record, followed to its end: an active one not polled
        anywhere gets polled; one another writer has not sent yet is watched in the store."""
        with self._registry.lock:
            known = record.local_id in self._registry
            handle = self._registry.register(record)
        if not known and not self._res.closed:
            if record.status.is_active:
                self.resume_in_background([record.local_id])
            elif record.status.is_local:
                # Another session or kernel is sending it (a paced map(), a slow submit):
                # only its writer may send it, so follow the row until it ends.
                self._engine.call_soon(self.watch, record.local_id)
        return handle

    def resume_in_background(self, local_ids: list[str]) -> None:
        """Resume polling on the engine; if that fails, no handle is left waiting for ever."""

        def done(future: concurrent.futures.Future[Any]) -> None:
            report_failure(future)
            if future.cancelled() or future.exception() is None:
                return
            for local_id in local_ids:
                handle = self._registry.get(local_id)
                if handle is not None and not handle.done() and local_id not in self._scheduler:
                    self._registry.end_in_memory(
                        local_id,
                        status=TaskStatus.TIMED_OUT,
                        error=f"polling could not be resumed ({future.exception()}); "
                        "task.resume() tries again",
                        finished_at=time.time(),
                    )

        self._engine.submit(self.resume(local_ids)).add_done_callback(done)

    def resume_one(self, task: Task) -> bool:
        """Poll one ended-but-resumable task again (timed out, abandoned, unavailable)."""
        self._res.check_open()
        record = task.record
        if record.task_id is None or not (record.status.is_resumable or record.status.is_active):
            return False
        self._settings.require_key()
        if self._engine.in_engine_thread():
            asyncio.get_running_loop().create_task(self.resume([task.local_id]))
        else:
            self._engine.run(self.resume([task.local_id]), timeout=60)
        return True

    def watch(self, local_id: str) -> None:
        """Follow a row another writer moves on, re-reading it often (engine thread)."""
        self._res.connect()
        if local_id not in self.watched:
            self.watched.add(local_id)
            self.watch_wake.set()

    def track(
        self, record: TaskRecord, *, poll_now: bool = False, fresh_deadline: bool = False
    ) -> None:
        """Start polling a submitted task, if this session can hold its lease."""
        assert record.task_id is not None
        _, poll_loop = self._res.connect()
        if not self._store.acquire_lease(record.local_id, self._owner, self._lease_ttl):
            self.watch(record.local_id)
            return
        self.watched.discard(record.local_id)
        now = time.monotonic()
        age = max(0.0, time.time() - (record.submitted_at or record.created_at))
        started = now - age
        deadline = (now if fresh_deadline else started) + self._settings.deadline
        self._scheduler.add(
            record.local_id,
            record.task_id,
            record.model,
            now=now,
            started=started,
            deadline=max(deadline, now),
            poll_now=poll_now,
        )
        poll_loop.wake()

    async def resume(self, local_ids: Sequence[str]) -> None:
        """Take these tasks up again (engine thread): poll those with a task id."""
        self._res.connect()
        for local_id in local_ids:
            if local_id in self._scheduler:
                continue
            record = self._store.get(local_id)
            if record is None:
                continue
            self._registry.refresh(record)
            if record.task_id is None:
                continue
            if record.status.is_terminal:
                if not record.status.is_resumable:
                    continue
                record = self._registry.set(
                    local_id, status=TaskStatus.PENDING, error=None, finished_at=None
                )
            self.track(record, poll_now=True, fresh_deadline=True)

    # -- the poll loop's decisions ------------------------------------------------------

    async def on_decision(self, local_id: str, decision: Decision) -> None:
        if decision.action is Action.CONTINUE:
            await self.record_decision(local_id, decision)
            return
        try:
            await self.record_decision(local_id, decision)
        except (sqlite3.Error, OSError) as exc:
            self.end_unsaved(local_id, exc)
        finally:
            # The task left the scheduler: whatever happened, its lease goes with it.
            with contextlib.suppress(sqlite3.Error, OSError):
                self._store.release_lease(local_id, self._owner)
            if self._res.receiver is not None:
                self._res.receiver.finished(local_id)

    def end_unsaved(self, local_id: str, exc: BaseException) -> None:
        """The final answer could not be saved (disk full, store broken): say so, keep it resumable.

        The store still holds the task as unfinished, so ``resume()`` (here or after a
        restart) polls it again and saves the result then; nothing is charged again.
        """
        logger.warning("task %s: could not save its result: %s", local_id, exc)
        handle = self._registry.get(local_id)
        if handle is None:
            return
        self._registry.show(
            local_id,
            handle.record.replace(
                status=TaskStatus.UNAVAILABLE,
                error=(
                    f"the task finished but its result could not be saved ({exc}); free some "
                    "space, then task.resume() or session.resume() fetches it again at no cost"
                ),
                finished_at=time.time(),
            ),
        )

    async def record_decision(self, local_id: str, decision: Decision) -> None:
        snapshot = decision.snapshot
        now = time.time()
        action = decision.action
        if action is Action.CONTINUE:
            handle = self._registry.get(local_id)
            if snapshot is not None and handle is not None:
                rec = handle.record
                if snapshot.status is not rec.status or snapshot.consumed != rec.consumed:
                    self._registry.set(
                        local_id,
                        status=snapshot.status,
                        consumed=snapshot.consumed,
                        polls=decision.polls,
                    )
            return
        if action is Action.FINISHED and snapshot is not None:
            if snapshot.status is TaskStatus.SUCCESS:
                await self._collector.collect(local_id, snapshot, decision.polls)
            else:
                self._registry.set(
                    local_id,
                    status=TaskStatus.FAILED,
                    error=snapshot.reason or "the server reports the task failed (no reason given)",
                    consumed=snapshot.consumed,
                    polls=decision.polls,
                    finished_at=now,
                )
        elif action is Action.NO_RESULT and snapshot is not None:
            # The server said success, but no answer carried an image or text: not final
            # (the result may still be written), so resumable, with what came back.
            self._registry.set(
                local_id,
                status=TaskStatus.UNAVAILABLE,
                error=(
                    "the server reported success but its answer carried no image or text "
                    f"({decision.error}); nothing more was charged: task.resume() (or "
                    "session.resume()) looks again at no cost; generate(..., force=True) pays "
                    f"for a new one. The server's result was: {snapshot.raw_result}"
                ),
                consumed=snapshot.consumed,
                polls=decision.polls,
                finished_at=now,
            )
        elif action is Action.TIMED_OUT:
            why = f" ({decision.error})" if decision.error else ""
            self._registry.set(
                local_id,
                status=TaskStatus.TIMED_OUT,
                error=(
                    f"not finished after {self._settings.deadline:g} s{why}; the server may "
                    "still finish it: session.resume() (or %nanobanana resume) picks it up"
                ),
                polls=decision.polls,
                finished_at=now,
            )
        elif action is Action.NOT_FOUND:
            # A 404 is no final answer: the server may still know, finish and charge the
            # task. Polling stops, the task stays resumable; "failed" is only ever what the
            # server says.
            self._registry.set(
                local_id,
                status=TaskStatus.TIMED_OUT,
                error=(
                    f"polling stopped: {decision.error}. The task may have expired, or the "
                    "server may still finish (and charge) it; it was not marked failed. "
                    "task.resume() (or session.resume()) looks again at no cost"
                ),
                polls=decision.polls,
                finished_at=now,
            )
        elif action is Action.AUTH_FAILED:
            self.stop_all_polling(
                f"polling stopped: {decision.error}. Fix the key, then session.resume()",
                first=local_id,
            )

    def stop_all_polling(self, message: str, *, first: str) -> None:
        """The key was refused: stop every poll (each would fail the same way)."""
        keys = [first, *[k for k in list(self._scheduler.keys()) if k != first]]
        for key in keys:
            self._scheduler.remove(key)
            self._registry.set(
                key, status=TaskStatus.TIMED_OUT, error=message, finished_at=time.time()
            )
            self._store.release_lease(key, self._owner)

    # -- maintenance and cancel ---------------------------------------------------------

    def maintain_leases(self) -> None:
        """Renew leases of polled tasks; follow tasks another kernel holds; take them over
        when their holder goes (a round of :func:`maintain`, every third of the lease)."""
        polled = self._scheduler.keys()
        if polled:
            held = self._store.renew_leases(self._owner, polled, self._lease_ttl)
            for lost in set(polled) - held:
                self._scheduler.remove(lost)
                self.watched.add(lost)
        unsent = []
        for local_id in list(self.watched):
            record = self.follow(local_id)
            if record is None:
                continue
            if record.task_id is not None:
                self.track(record, poll_now=True)
            elif record.status.is_local:
                unsent.append(local_id)
        # A row another writer had not sent: if that writer stopped (a killed kernel), the
        # store settles the row (not_sent, or submit_unknown if it was sending), as it does
        # when it opens, and the next round shows that.
        if unsent and self._store.recover_interrupted(unsent):
            self.follow_watched()

    def follow_watched(self) -> None:
        """Show every followed handle what the store says now (every :data:`WATCH_INTERVAL`)."""
        for local_id in list(self.watched):
            self.follow(local_id)

    def follow(self, local_id: str) -> TaskRecord | None:
        """Re-read one followed row into its handle; stop following it once it has ended."""
        record = self._store.get(local_id)
        if record is not None:
            self._registry.refresh(record)
        if record is None or record.status.is_terminal:
            self.watched.discard(local_id)
            return None
        return record

    def abandon(self, task: Task) -> bool:
        if task.done() or task.status.is_local:
            return False

        async def abandon() -> bool:
            self._scheduler.remove(task.local_id)
            self.watched.discard(task.local_id)
            self._registry.set(
                task.local_id,
                status=TaskStatus.ABANDONED,
                error=(
                    "cancelled locally; the API has no cancel, so the server may still "
                    "finish and charge it; task.resume() picks it up again"
                ),
                finished_at=time.time(),
            )
            self._store.release_lease(task.local_id, self._owner)
            return True

        if self._engine.in_engine_thread():
            asyncio.get_running_loop().create_task(abandon())
            return True
        return self._engine.run(abandon(), timeout=10)
