"""Webhook reconciliation: what a task's callback tells this session.

A callback is only a hint (its body is not trusted): a task being polled is queried at once;
one whose submit is still in flight is queried as soon as the submit returns (an *early*
hint); a submission whose answer was lost (``submit_unknown``) is bound to the task its
callback names once the API confirms that task, and only if no other row holds it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nanobanana_jupyter._wire.errors import APIError
from nanobanana_jupyter._wire.models import TaskStatus

from .handles import Registry
from .resources import Resources
from .tracker import Tracker

__all__ = ["Reconciler"]

logger = logging.getLogger("nanobanana_jupyter")


class Reconciler:
    """Turns a session's webhook callbacks into queries (engine thread)."""

    def __init__(self, resources: Resources, registry: Registry, tracker: Tracker) -> None:
        self._res = resources
        self._store = resources.store
        self._scheduler = resources.scheduler
        self._registry = registry
        self._tracker = tracker
        # Callbacks that came while their submit was in flight: local id -> the task id named.
        self.early_hints: dict[str, str | None] = {}

    def take_early_hint(self, local_id: str) -> tuple[bool, str | None]:
        """Whether a callback came for ``local_id`` while it was submitting, and the task id
        it named (forgotten here)."""
        came = local_id in self.early_hints
        return came, self.early_hints.pop(local_id, None)

    def on_hint(self, local_id: str, task_id: str | None) -> None:
        """A callback arrived: confirm by querying now (engine loop). The body is not trusted."""
        if local_id in self._scheduler:
            handle = self._registry.get(local_id)
            entry_task = handle.task_id if handle is not None else None
            if task_id is not None and entry_task is not None and task_id != entry_task:
                logger.warning("ignoring a callback whose task_id does not match its URL")
                return
            if self._scheduler.poke(local_id, time.monotonic()) and self._res.poll_loop:
                self._res.poll_loop.wake()
            return
        record = self._store.get(local_id)
        if record is None:
            return
        if record.status is TaskStatus.SUBMITTING:
            self.early_hints[local_id] = task_id
        elif record.status is TaskStatus.SUBMIT_UNKNOWN and task_id is not None:
            # The submit's answer was lost, but the callback names the task: reconcile once
            # the API confirms it (the body alone is not trusted).
            reconcile = asyncio.get_running_loop().create_task(self.reconcile(local_id, task_id))
            self._res.background.add(reconcile)
            reconcile.add_done_callback(self._res.background.discard)

    async def reconcile(self, local_id: str, task_id: str) -> None:
        """Bind a lost submission to the task its callback named, if the API knows that task.

        Nothing is bound when another row of this store already holds the task (a replayed or
        forged callback), or when this account's API does not know it (404 or any error).
        """
        client, _ = self._res.connect()
        if not self.holds_only(local_id, task_id):
            logger.warning("ignoring a callback naming a task another submission holds")
            return
        try:
            await client.query(task_id)
        except (APIError, ValueError) as exc:
            logger.warning("ignoring a callback naming a task the API does not confirm: %s", exc)
            return
        # Checked again after the await: the submit, a resume or another callback may have
        # settled either row meanwhile.
        record = self._store.get(local_id)
        if record is None or record.status is not TaskStatus.SUBMIT_UNKNOWN:
            return
        if not self.holds_only(local_id, task_id):
            return
        self._registry.register(record)
        recovered = self._registry.set(
            local_id, task_id=task_id, status=TaskStatus.PENDING, error=None
        )
        if recovered.status.is_active:
            self._tracker.track(recovered, poll_now=True, fresh_deadline=True)

    def holds_only(self, local_id: str, task_id: str) -> bool:
        """True when no row but ``local_id``'s holds ``task_id`` (a refusal may have named it)."""
        holder = self._store.get_by_task_id(task_id)
        return holder is None or holder.local_id == local_id
