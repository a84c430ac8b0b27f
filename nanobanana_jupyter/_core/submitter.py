"""The submit path: a request's intent written before it leaves, sent once, within caps.

:meth:`Submitter.start` writes the intent (``waiting_to_send``) to the store, or hands back
the task of an identical earlier request (reuse); :meth:`Submitter.submit` (engine thread)
waits for a slot and the rate cap, writes ``submitting`` (durable before the request
leaves), sends it once and writes how it ended: its task id, ``not_sent`` (nothing left this
machine) or ``submit_unknown`` (it may have been charged: never sent again).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.errors import (
    APIError,
    NanoBananaError,
    RateLimitError,
    SubmitOutcomeUnknownError,
)
from nanobanana_jupyter._wire.models import GenerationRequest, TaskStatus, with_callback_url

from .budget import BudgetGuard
from .handles import Registry
from .poll_loop import RateLimiter
from .reconciler import Reconciler
from .resources import Resources
from .support import message_of, report_failure
from .task import Task
from .tracker import Tracker

__all__ = ["SUBMIT_UNKNOWN_HELP", "Submitter"]

logger = logging.getLogger("nanobanana_jupyter")

SUBMIT_UNKNOWN_HELP = (
    "the submit may have reached the server, so the task may exist and may have been "
    "charged; it was not sent again. Check your defapi.org task list; to send it anyway, "
    "call generate(..., force=True)"
)


def describe_reference(ref: str) -> str:
    """What the store keeps of a reference: URLs as given, inline images by the sha256 of
    the image bytes they came from (a stored result's own hash, for lineage; see
    :class:`~.references.Reference`), else of the bytes the data URI holds."""
    source = getattr(ref, "source_sha256", None)
    if isinstance(source, str):
        return f"sha256:{source}"
    if ref.startswith("data:"):
        _, _, payload = ref.partition(",")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            data = ref.encode()
        return "sha256:" + hashlib.sha256(data).hexdigest()
    return ref


@dataclass(frozen=True)
class _Planned:
    """One request of a batch: a new intent (``record`` and the ``request`` to send), an
    earlier task to hand back (``existing``), or a repeat of the batch's item ``repeat_of``."""

    record: TaskRecord | None = None
    request: GenerationRequest | None = None
    existing: TaskRecord | None = None
    repeat_of: int = -1


def _closed_unsent() -> dict[str, Any]:
    """How a request ends that the session closed before sending."""
    return {
        "status": TaskStatus.NOT_SENT,
        "error": "the session closed before this request was sent (nothing was charged): "
        "generate it again",
        "finished_at": time.time(),
    }


def _report_job(job: asyncio.Task[None]) -> None:
    """Log what escaped a submit job: nothing on the submit path may vanish unseen."""
    if not job.cancelled() and job.exception() is not None:
        logger.error("a submit job of the session failed", exc_info=job.exception())


class Submitter:
    """Starts a session's tasks and sends their requests, within the submit caps."""

    def __init__(
        self,
        resources: Resources,
        registry: Registry,
        tracker: Tracker,
        reconciler: Reconciler,
        *,
        max_submits_per_second: float,
    ) -> None:
        self._res = resources
        self._store = resources.store
        self._engine = resources.engine
        self._registry = registry
        self._tracker = tracker
        self._reconciler = reconciler
        self.limiter = RateLimiter(max_submits_per_second, burst=max(1.0, max_submits_per_second))
        self.budget = BudgetGuard(self._store, self._submitted_records)

    def _submitted_records(self) -> list[TaskRecord]:
        """The records of the tasks this session sent (the budget's spending)."""
        handles = (self._registry.get(i) for i in list(self._registry.submitted))
        return [h.record for h in handles if h is not None]

    def check_budget(self, requests: list[tuple[GenerationRequest, int]], *, force: bool) -> None:
        """Refuse a batch up front, before any of it is written or sent, when the requests
        that would be sent (not handed back) would pass the budget together.

        Raises:
            BudgetExceededError: see :meth:`BudgetGuard.check`.
        """
        if self.budget.limit is None:
            return
        with self._registry.lock:
            models = [
                request.model
                for request, variant in requests
                if force or self._store.find_reusable(request.fingerprint(variant)) is None
            ]
            self.budget.check(models)

    def start(
        self,
        request: GenerationRequest,
        *,
        force: bool,
        slots: asyncio.Semaphore | None = None,
        variant: int = 0,
    ) -> Task:
        """Start one request: :meth:`start_many` of one."""
        return self.start_many([(request, variant)], force=force, slots=slots)[0]

    def start_many(
        self,
        requests: Sequence[tuple[GenerationRequest, int]],
        *,
        force: bool,
        slots: asyncio.Semaphore | None = None,
    ) -> list[Task]:
        """Start a batch of ``(request, variant)``: one handle each, in order.

        An identical earlier request is handed back (reuse) unless ``force``, and so is a
        repeat within the batch (the first of them is sent, once). The intents of all the
        new ones are written in one transaction, durable before any of them is sent; the
        budget is checked for them together first, so a refused batch leaves no trace.
        """
        receiver = self._res.receiver
        planned: list[_Planned] = []
        with self._registry.lock:
            # 1. What each request is: new, a repeat within the batch, or an earlier task
            #    (reads only: nothing is written until the budget has said yes).
            fingerprints = [request.fingerprint(variant) for request, variant in requests]
            known = set() if force else self._store.known_fingerprints(fingerprints)
            first_new: dict[str, int] = {}
            for (request, _), fingerprint in zip(requests, fingerprints, strict=True):
                if not force:
                    if fingerprint in first_new:
                        planned.append(_Planned(repeat_of=first_new[fingerprint]))
                        continue
                    existing = (
                        self._store.find_reusable(fingerprint) if fingerprint in known else None
                    )
                    if existing is not None:
                        planned.append(_Planned(existing=existing))
                        continue
                    first_new[fingerprint] = len(planned)
                local_id = uuid.uuid4().hex
                if receiver is not None and request.callback_url is None:
                    request = with_callback_url(request, receiver.url_for(local_id))
                now = time.time()
                record = TaskRecord(
                    local_id=local_id,
                    status=TaskStatus.WAITING_TO_SEND,
                    prompt=request.prompt,
                    model=request.model,
                    fingerprint=fingerprint,
                    created_at=now,
                    updated_at=now,
                    aspect_ratio=request.aspect_ratio,
                    image_size=request.image_size,
                    callback_url=None if receiver is not None else request.callback_url,
                    references=tuple(describe_reference(r) for r in request.images),
                )
                planned.append(_Planned(record=record, request=request))
            new = [p for p in planned if p.record is not None]
            # 2. Before anything is written: a refused batch leaves no trace (none was sent).
            self.budget.check([p.request.model for p in new if p.request is not None])
            # 3. Every intent of the batch durable at once, before any request leaves.
            if new:
                self._store.insert_many(p.record for p in new if p.record is not None)
            handles: list[Task] = []
            for item in planned:
                if item.record is not None:
                    handle = self._registry.register(item.record, announce=True)
                    self._registry.mark_submitted(handle)
                elif item.existing is not None:
                    handle = self._reuse(item.existing)
                else:
                    handle = handles[item.repeat_of]
                    self._registry.mark_reused(handle)
                handles.append(handle)
        sends = [(p.record.local_id, p.request) for p in new if p.record and p.request]
        if sends:
            self._res.add_unsent([local_id for local_id, _ in sends])
            self._engine.submit(self._send_all(sends, slots)).add_done_callback(report_failure)
        return handles

    def _reuse(self, existing: TaskRecord) -> Task:
        """Hand back ``existing`` for an identical request (registry lock held)."""
        logger.info(
            "reusing task %s for an identical request (force=True sends it again)",
            existing.task_id or existing.local_id,
        )
        handle = self._tracker.handle_for(existing)
        self._registry.mark_reused(handle)
        if existing.status.is_resumable and not self._res.closed:
            # Timed out or unavailable: look again (free) instead of paying again; running
            # from here on, so a wait() on the handle waits for that look.
            self._registry.set(
                existing.local_id, status=TaskStatus.PENDING, error=None, finished_at=None
            )
            self._tracker.resume_in_background([existing.local_id])
        return handle

    async def _send_all(
        self, sends: list[tuple[str, GenerationRequest]], slots: asyncio.Semaphore | None
    ) -> None:
        """Start one submit job per intent (engine thread), in the batch's order: one hop to
        the engine for the whole batch. Each job holds itself in ``Resources.submitting``."""
        loop = asyncio.get_running_loop()
        jobs = [
            loop.create_task(self.submit(local_id, request, slots)) for local_id, request in sends
        ]
        for job in jobs:
            job.add_done_callback(_report_job)

    def on_client_retry(self, error: APIError, delay: float) -> None:
        if not isinstance(error, RateLimitError):
            return
        # The server says this session is too fast: slow its queries and its submits.
        self.limiter.on_rate_limited(time.monotonic(), error.retry_after)
        if self._res.poll_loop is not None:
            self._res.poll_loop.on_rate_limited(error.retry_after)

    async def submit(
        self, local_id: str, request: GenerationRequest, slots: asyncio.Semaphore | None
    ) -> None:
        if self._res.closed:  # never sent: close settles it with the rest, or here if later
            if self._res.take_unsent(local_id, closing=True):
                self.settle(local_id, **_closed_unsent())
            return
        client, _ = self._res.connect()
        submit_slots = self._res.submit_slots
        assert submit_slots is not None
        current = asyncio.current_task()
        if current is not None:
            self._res.submitting.add(current)
            current.add_done_callback(self._res.submitting.discard)
        sent = False
        try:
            # A map() call's own bound (if any), then the session's, then its rate cap.
            async with slots or contextlib.nullcontext(), submit_slots:
                await self.limiter.acquire()
                if not self._res.take_unsent(local_id):
                    return  # the session closed meanwhile and settled it not_sent
                # Durable before the request leaves: a crash from here on is submit_unknown,
                # before it, not_sent (Store.recover_interrupted).
                if self._registry.set(local_id, status=TaskStatus.SUBMITTING).status is not (
                    TaskStatus.SUBMITTING
                ):
                    return  # another process settled it as not sent: it stays unsent
                sent = True
                if current is not None:
                    self._res.sending.add(current)
                    current.add_done_callback(self._res.sending.discard)
                task_id = await client.submit(request, idempotency_key=local_id)
        except asyncio.CancelledError:
            if not sent:  # closed while it waited for its turn: nothing left this machine
                if self._res.take_unsent(local_id):  # else close settled it with the rest
                    self.settle(local_id, **_closed_unsent())
                raise
            # The session closed with this submit in flight: its outcome is unknown.
            self.settle(
                local_id,
                status=TaskStatus.SUBMIT_UNKNOWN,
                error=f"the session closed while the submit was in flight: {SUBMIT_UNKNOWN_HELP}",
                finished_at=time.time(),
            )
            raise
        except SubmitOutcomeUnknownError as exc:
            why = message_of(exc.cause) if exc.cause else exc.message
            if exc.task_id is not None:
                # The answer named a task that may be paid for: say so at once, wherever the
                # row ends up (never the key: log lines are redacted).
                logger.warning(
                    "task %s: the submit's answer named task id %s: %s", local_id, exc.task_id, why
                )
                why = f"{why} (the answer named task id {exc.task_id})"
            unknown: dict[str, Any] = {
                "status": TaskStatus.SUBMIT_UNKNOWN,
                "error": f"{why}: {SUBMIT_UNKNOWN_HELP}",
                "finished_at": time.time(),
            }
            try:
                # The answer named the task: keep its id with the row.
                self._registry.set(local_id, task_id=exc.task_id, **unknown)
            except ValueError:  # another row holds that id: it stays in the error text only
                self.settle(local_id, **unknown)
            except (sqlite3.Error, OSError, RuntimeError):
                self.settle(local_id, task_id=exc.task_id, **unknown)
            # A callback that came while the submit hung names the task: use it (W8).
            _, hint = self._reconciler.take_early_hint(local_id)
            if hint is not None:
                self._reconciler.on_hint(local_id, hint)
            return
        except NanoBananaError as exc:
            self.settle(
                local_id, status=TaskStatus.NOT_SENT, error=exc.message, finished_at=time.time()
            )
            return
        except Exception as exc:  # our own bug (or the store's): be safe, never re-send
            logger.exception("unexpected error while submitting")
            if sent:
                status, error = TaskStatus.SUBMIT_UNKNOWN, SUBMIT_UNKNOWN_HELP
            else:
                status, error = TaskStatus.NOT_SENT, "it was not sent, nothing was charged"
            self.settle(
                local_id,
                status=status,
                error=f"unexpected {type(exc).__name__}: {error}",
                finished_at=time.time(),
            )
            return
        self.limiter.on_success()
        accepted = {"task_id": task_id, "status": TaskStatus.PENDING, "submitted_at": time.time()}
        try:
            record = self._registry.set(local_id, **accepted)
        except (sqlite3.Error, OSError, ValueError) as exc:
            saved = self.submitted_unsaved(local_id, accepted, exc)
            if saved is None:
                return
            record = saved
        if record.status.is_active:
            poll_now, _ = self._reconciler.take_early_hint(local_id)
            try:
                self._tracker.track(record, poll_now=poll_now)
            except (sqlite3.Error, OSError) as exc:
                # Stored with its id: lease maintenance takes it up on its next round.
                logger.warning(
                    "task %s (%s): could not start polling yet: %s", local_id, task_id, exc
                )
                self._tracker.watch(local_id)

    def settle_unsent(self, local_ids: list[str]) -> None:
        """The session closed before these requests left: ``not_sent``, in one write."""
        changes = _closed_unsent()
        try:
            self._registry.set_many(local_ids, **changes)
        except (sqlite3.Error, OSError, ValueError, RuntimeError) as exc:  # Runtime: closed
            # The rows stay waiting_to_send: the next session settles them not_sent.
            logger.warning(
                "could not save that %d requests ended not_sent: %s", len(local_ids), exc
            )
            for local_id in local_ids:
                self._registry.end_in_memory(local_id, **changes)

    def settle(self, local_id: str, **changes: Any) -> None:
        """Write how a submit ended; if the store refuses, still end the handle, and log it."""
        try:
            self._registry.set(local_id, **changes)
        except (sqlite3.Error, OSError, ValueError, RuntimeError) as exc:  # Runtime: closed
            logger.warning(
                "task %s: could not save that it ended %s: %s",
                local_id,
                changes["status"].value,
                exc,
            )
            self._registry.end_in_memory(local_id, **changes)

    def submitted_unsaved(
        self, local_id: str, accepted: dict[str, Any], exc: BaseException
    ) -> TaskRecord | None:
        """The API accepted the request as a task, but the store did not take its id.

        Either another row holds that id already (the store's UNIQUE index: a de-duplicating
        proxy or gateway answered with an earlier task), or the write failed (disk full,
        database locked). The task was paid for and is never sent again. The id goes into a
        log line at once (never the key). A failed write is tried once more; if it is saved
        then, the stored record is returned and the task is polled as usual. Otherwise the
        handle ends ``submit_unknown`` with the id on it and in its error, written to the row
        as far as the store allows, so the user can find the task.
        """
        task_id: str = accepted["task_id"]
        logger.warning(
            "task %s: submitted as task id %s, but not saved: %s", local_id, task_id, exc
        )
        holder = None
        with contextlib.suppress(sqlite3.Error, OSError):
            holder = self._store.get_by_task_id(task_id)
        duplicate = holder is not None and holder.local_id != local_id
        if duplicate:
            assert holder is not None
            why = (
                f"the API answered with task id {task_id}, which task {holder.local_id} of "
                "this history already holds (a proxy or gateway that de-duplicates requests "
                f"may have answered with an earlier task); look at task {task_id} there or "
                "in your defapi.org task list. This request was not sent again"
            )
        else:
            why = (
                f"the API accepted the request as task {task_id}, but the history could not "
                f"record it ({exc}); it was not sent again. Free some space or close what "
                f"locks the store; the task is in your defapi.org task list as {task_id}"
            )
        if not duplicate:
            try:
                return self._registry.set(local_id, **accepted)
            except (sqlite3.Error, OSError, ValueError) as again:
                logger.warning("task %s (%s): saving failed again: %s", local_id, task_id, again)
        changes: dict[str, Any] = {
            "status": TaskStatus.SUBMIT_UNKNOWN,
            "error": why,
            "submitted_at": time.time(),
            "finished_at": time.time(),
        }
        # The id in its column where the store can keep it (never two rows with one id),
        # else at least in the error text.
        for extra in ({} if duplicate else {"task_id": task_id}, {}):
            try:
                self._registry.set(local_id, **changes, **extra)
                break
            except (sqlite3.Error, OSError, ValueError) as again:
                logger.warning(
                    "task %s (%s): could not save submit_unknown: %s", local_id, task_id, again
                )
        # The handle shows the id in any case.
        self._registry.end_in_memory(local_id, task_id=task_id, **changes)
        return None
